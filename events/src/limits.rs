//! Bounds on every command a client may send, checked at intake: an input
//! that passes them can always be stored, published and processed (no
//! event larger than the server accepts, no sum that overflows). Part of
//! the wire contract: a refused command is answered with every problem
//! named (field, what was wrong, what is accepted).

use crate::{CancelOrder, CreateCustomer, CreateOrder, LogOut, SetRole, SignUp, UpsertProduct};

pub use jetsaga_envelope::MAX_COMMAND_BYTES;
/// Longest id (`order_id`, `customer_id`, `product_id`), in characters.
pub const MAX_ID_CHARS: usize = 128;
/// Longest name (product, customer), in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest free-text reason (a cancel's), in characters.
pub const MAX_REASON_CHARS: usize = 500;
/// Most orders one page of `orders.query.list` holds.
pub const MAX_PAGE: u32 = 100;
/// Most lines in one order.
pub const MAX_ITEMS: usize = 100;
/// Most units of one line.
pub const MAX_QUANTITY: u32 = 10_000;
/// Highest unit price: one million dollars.
pub const MAX_PRICE_CENTS: u64 = 100_000_000;
/// Highest credit limit: ten billion dollars.
pub const MAX_CREDIT_LIMIT_CENTS: u64 = 1_000_000_000_000;

/// The JSON Schema `pattern` of a required id or name: not blank, no
/// control characters (what [`CreateOrder::validate`] and the others check).
pub const REQUIRED_TEXT_PATTERN: &str =
    r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$";

/// The JSON Schema `pattern` of optional free text: no control characters.
pub const OPTIONAL_TEXT_PATTERN: &str = r"^[^\u0000-\u001F\u007F-\u009F]*$";

/// The JSON Schema `pattern` of an email address: one `@`, a dot inside the
/// domain, no spaces or control characters.
pub const EMAIL_PATTERN: &str = concat!(
    r"^[^@\s\u0000-\u001F\u007F-\u009F]+@",
    r"[^@.\s\u0000-\u001F\u007F-\u009F][^@\s\u0000-\u001F\u007F-\u009F]*",
    r"\.[^@\s\u0000-\u001F\u007F-\u009F]*[^@.\s\u0000-\u001F\u007F-\u009F]$"
);

/// Problems listed in one refusal; the rest are counted.
const MAX_LISTED: usize = 10;

/// The problems found in one command.
#[derive(Debug, Default)]
struct Problems(Vec<String>);

impl Problems {
    /// A required id: not blank, at most [`MAX_ID_CHARS`], no control characters.
    fn id(&mut self, field: &str, value: &str) {
        self.text(field, value, MAX_ID_CHARS, true);
    }

    fn text(&mut self, field: &str, value: &str, max: usize, required: bool) {
        let chars = value.chars().count();
        if required && value.trim().is_empty() {
            self.0.push(format!("{field} must not be empty"));
        } else if chars > max {
            self.0.push(format!("{field} must be at most {max} characters, got {chars}"));
        } else if value.chars().any(char::is_control) {
            self.0.push(format!("{field} must not contain control characters"));
        }
    }

    fn at_most(&mut self, field: &str, value: u64, max: u64) {
        if value > max {
            self.0.push(format!("{field} must be at most {max}, got {value}"));
        }
    }

    fn finish(self, what: &str) -> Result<(), String> {
        match self.0.len() {
            0 => Ok(()),
            n if n > MAX_LISTED => Err(format!(
                "invalid {what}: {}; and {} more problems",
                self.0[..MAX_LISTED].join("; "),
                n - MAX_LISTED
            )),
            _ => Err(format!("invalid {what}: {}", self.0.join("; "))),
        }
    }
}

impl CreateOrder {
    /// Checks the command against the bounds; every problem is named.
    pub fn validate(&self) -> Result<(), String> {
        let mut p = Problems::default();
        if let Some(order_id) = &self.order_id {
            p.text("order_id", order_id, MAX_ID_CHARS, true);
            if order_id.trim().is_empty() {
                p.0.last_mut().expect("just pushed").push_str(" when given");
            }
        }
        p.id("customer_id", &self.customer_id);
        if self.items.is_empty() {
            p.0.push("items must list at least one product".into());
        } else if self.items.len() > MAX_ITEMS {
            p.0.push(format!("items must list at most {MAX_ITEMS} lines, got {}", self.items.len()));
        } else {
            for (i, item) in self.items.iter().enumerate() {
                p.id(&format!("items[{i}].product_id"), &item.product_id);
                if item.quantity == 0 {
                    p.0.push(format!("items[{i}].quantity must be at least 1, got 0"));
                }
                p.at_most(&format!("items[{i}].quantity"), u64::from(item.quantity), u64::from(MAX_QUANTITY));
            }
        }
        p.finish("order")
    }
}

impl CancelOrder {
    /// Checks the command against the bounds; every problem is named.
    pub fn validate(&self) -> Result<(), String> {
        let mut p = Problems::default();
        p.id("order_id", &self.order_id);
        if let Some(reason) = &self.reason {
            p.text("reason", reason, MAX_REASON_CHARS, false);
        }
        p.finish("cancel")
    }
}

impl UpsertProduct {
    /// Checks the command against the bounds; every problem is named.
    pub fn validate(&self) -> Result<(), String> {
        let mut p = Problems::default();
        p.id("product_id", &self.product_id);
        p.text("name", &self.name, MAX_NAME_CHARS, true);
        p.at_most("price_cents", self.price_cents, MAX_PRICE_CENTS);
        p.finish("product")
    }
}

/// The longest email address (RFC 5321's path limit).
pub const MAX_EMAIL_CHARS: usize = 254;

/// The longest password hash accepted (an Argon2id PHC string is ~100).
pub const MAX_PASSWORD_HASH_CHARS: usize = 512;

impl Problems {
    /// An email address: `local@domain`, no spaces, at most [`MAX_EMAIL_CHARS`].
    fn email(&mut self, value: &str) {
        let chars = value.chars().count();
        let well_formed = value.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.')
        }) && value.matches('@').count() == 1;
        if value.trim().is_empty() {
            self.0.push("email must not be empty".into());
        } else if chars > MAX_EMAIL_CHARS {
            self.0.push(format!("email must be at most {MAX_EMAIL_CHARS} characters, got {chars}"));
        } else if value.chars().any(|c| c.is_whitespace() || c.is_control()) || !well_formed {
            self.0.push("email must look like name@example.com (one @, a dot in the domain, no spaces)".into());
        }
    }
}

impl SignUp {
    /// Checks the command against the bounds; every problem is named (the
    /// hash itself never appears in a message).
    pub fn validate(&self) -> Result<(), String> {
        let mut p = Problems::default();
        p.email(&self.email);
        p.text("name", &self.name, MAX_NAME_CHARS, true);
        if !self.password_hash.starts_with("$argon2id$") || self.password_hash.chars().count() > MAX_PASSWORD_HASH_CHARS
        {
            p.0.push(format!(
                "password_hash must be an Argon2id PHC string ($argon2id$...) of at most {MAX_PASSWORD_HASH_CHARS} characters"
            ));
        }
        p.finish("sign-up")
    }
}

impl SetRole {
    /// Checks the command against the bounds.
    pub fn validate(&self) -> Result<(), String> {
        let mut p = Problems::default();
        p.email(&self.email);
        p.finish("role change")
    }
}

impl LogOut {
    /// Checks the command against the bounds.
    pub fn validate(&self) -> Result<(), String> {
        let mut p = Problems::default();
        p.id("user_id", &self.user_id);
        p.finish("logout")
    }
}

impl CreateCustomer {
    /// Checks the command against the bounds; every problem is named.
    pub fn validate(&self) -> Result<(), String> {
        let mut p = Problems::default();
        p.id("customer_id", &self.customer_id);
        p.text("name", &self.name, MAX_NAME_CHARS, true);
        p.at_most("credit_limit_cents", self.credit_limit_cents, MAX_CREDIT_LIMIT_CENTS);
        p.finish("customer")
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_documented_patterns_accept_exactly_what_the_checks_accept() {
        let full = |pattern: &str| regex::Regex::new(pattern).unwrap();
        let (required, optional, email) =
            (full(REQUIRED_TEXT_PATTERN), full(OPTIONAL_TEXT_PATTERN), full(EMAIL_PATTERN));
        let texts = ["p-1", " p 1 ", "", " ", "\t", "a\u{7}b", "a\u{85}", "ünï cödé", "\u{3000}", "x\ny", "\u{feff}x"];
        for text in texts {
            let mut p = Problems::default();
            p.id("id", text);
            assert_eq!(required.is_match(text), p.0.is_empty(), "required text {text:?}");
            let mut p = Problems::default();
            p.text("reason", text, MAX_REASON_CHARS, false);
            assert_eq!(optional.is_match(text), p.0.is_empty(), "optional text {text:?}");
        }
        let emails = [
            "ada@example.com",
            "a@b.c",
            "ada@example",
            "@example.com",
            "a@.com",
            "a@com.",
            "a b@c.d",
            "a@@b.c",
            "a@b.c\u{7}",
        ];
        for address in emails {
            let mut p = Problems::default();
            p.email(address);
            assert_eq!(email.is_match(address), p.0.is_empty(), "email {address:?}");
        }
    }

    use super::*;
    use crate::OrderItem;

    fn order(items: Vec<OrderItem>) -> CreateOrder {
        CreateOrder { order_id: None, customer_id: "c".into(), items }
    }

    fn item(product_id: &str, quantity: u32) -> OrderItem {
        OrderItem { product_id: product_id.into(), quantity }
    }

    #[test]
    fn every_bound_is_named_with_what_is_accepted() {
        let long = "x".repeat(MAX_ID_CHARS + 1);
        let mut cmd = order(vec![item(&long, MAX_QUANTITY + 1), item("p\u{0}", 1)]);
        cmd.order_id = Some(String::new());
        assert_eq!(
            cmd.validate().unwrap_err(),
            format!(
                "invalid order: order_id must not be empty when given; items[0].product_id must be at most 128 characters, \
                 got 129; items[0].quantity must be at most {MAX_QUANTITY}, got {}; items[1].product_id must not contain \
                 control characters",
                MAX_QUANTITY + 1
            )
        );
        let many = order((0..=MAX_ITEMS).map(|i| item(&format!("p{i}"), 1)).collect());
        assert_eq!(many.validate().unwrap_err(), "invalid order: items must list at most 100 lines, got 101");
        assert!(order((0..MAX_ITEMS).map(|i| item(&format!("p{i}"), MAX_QUANTITY)).collect()).validate().is_ok());
    }

    #[test]
    fn a_refusal_lists_ten_problems_and_counts_the_rest() {
        let cmd = order((0..12).map(|_| item("", 0)).collect());
        let err = cmd.validate().unwrap_err();
        assert!(err.ends_with("; and 14 more problems"), "{err}");
        assert_eq!(err.matches("; ").count(), 10, "{err}");
    }

    #[test]
    fn catalog_commands_are_bounded() {
        let product =
            UpsertProduct { product_id: "p".into(), name: "".into(), price_cents: MAX_PRICE_CENTS + 1, stock: 1 };
        assert_eq!(
            product.validate().unwrap_err(),
            format!(
                "invalid product: name must not be empty; price_cents must be at most {MAX_PRICE_CENTS}, got {}",
                MAX_PRICE_CENTS + 1
            )
        );
        let customer = CreateCustomer { customer_id: "c".into(), name: "n".repeat(201), credit_limit_cents: 5 };
        assert_eq!(customer.validate().unwrap_err(), "invalid customer: name must be at most 200 characters, got 201");
        let cancel = CancelOrder { order_id: "o".into(), reason: Some("r".repeat(501)) };
        assert_eq!(cancel.validate().unwrap_err(), "invalid cancel: reason must be at most 500 characters, got 501");
    }
}
