//! The users step: who may log in, as whom, and with which role.
//!
//! - `users.cmd.sign_up` (request/reply only, never kept in a stream)
//!   registers a user under a new id, with the password's Argon2id hash as
//!   the caller computed it; the email is the login name and is unique.
//!   `users.evt.signed_up` carries no secret; the customer function creates
//!   the user's customer from it.
//! - `users.query.authenticate` checks a password against the stored hash
//!   (or, for an unknown email, against a decoy hash, so both take as long
//!   and answer the same 401). The check runs on the process's bounded
//!   pool for expensive work ([`jetsaga_core::cpu`]), never on the async
//!   runtime that runs the functions; when the pool stays full it answers
//!   503. How often anyone may try is the caller's to limit (the HTTP
//!   gateway counts attempts per account and client, shared by every
//!   instance).
//! - `users.cmd.set_role` makes a user an administrator.
//!
//! No password or hash ever leaves this function's store: events, answers
//! and errors carry ids, emails, names and roles only.
//!
//! State: `user/<user_id>` ([`User`]), `email/<email>` (the user id).

use std::sync::OnceLock;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use chrono::{DateTime, Utc};
use jetsaga_core::{Ctx, Function, FunctionSpec, HandlerError, QueryCtx, QueryError, async_trait};
use jetsaga_events::subjects::*;
use jetsaga_events::*;
use serde::{Deserialize, Serialize};

/// The longest password `authenticate` looks at (longer ones cannot match:
/// the gateway refuses them at sign-up).
pub const MAX_PASSWORD_CHARS: usize = 256;

/// A user as stored.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Id.
    pub user_id: String,
    /// Email, lower-cased.
    pub email: String,
    /// Display name.
    pub name: String,
    /// The password as an Argon2id PHC string.
    pub password_hash: String,
    /// The customer whose orders the user places.
    pub customer_id: String,
    /// Role.
    pub role: Role,
    /// When the user signed up.
    pub created_at: DateTime<Utc>,
    /// Sessions issued before this moment are over (the last logout).
    #[serde(default)]
    pub sessions_valid_from: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for User {
    /// Never prints the hash.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("user_id", &self.user_id)
            .field("email", &self.email)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl User {
    fn view(&self) -> UserView {
        UserView {
            user_id: self.user_id.clone(),
            email: self.email.clone(),
            name: self.name.clone(),
            customer_id: self.customer_id.clone(),
            role: self.role,
            sessions_valid_from: self.sessions_valid_from,
        }
    }
}

/// The login name: emails compare case-insensitively.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

fn user_key(user_id: &str) -> String {
    format!("user/{user_id}")
}

fn email_key(email: &str) -> String {
    format!("email/{}", normalize_email(email))
}

/// Hashes a password with Argon2id and a random salt, as a PHC string (what
/// the gateway sends in `users.cmd.sign_up`).
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Argon2::default().hash_password(password.as_bytes(), &salt).expect("Argon2id hashes any password").to_string()
}

/// Whether `password` matches the PHC string `hash` (a malformed hash matches nothing).
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
}

/// A hash no password typed at a login form matches in practice, checked
/// for unknown emails so that they cost as long as known ones.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| hash_password("jetsaga decoy: no user has this password"))
}

/// The users function.
#[derive(Clone, Copy, Debug, Default)]
pub struct Users;

/// Declaration (the same in both saga modes).
pub static SPEC: FunctionSpec = FunctionSpec {
    name: "users",
    description: "Users: sign-up with Argon2id hashes, roles, password checks on a bounded pool",
    subscribes: &[],
    accepts: &[USERS_CMD_SET_ROLE, USERS_CMD_LOG_OUT],
    direct: &[USERS_CMD_SIGN_UP],
    emits: &[USERS_EVT_SIGNED_UP, USERS_EVT_ROLE_CHANGED],
    queries: &[USERS_QUERY_AUTHENTICATE, USERS_QUERY_GET],
    key_field: None,
};

impl Users {
    /// Registers a user; the email must be new.
    pub async fn sign_up(&self, ctx: &mut Ctx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        let cmd: SignUp = event.data_as()?;
        if let Err(reason) = cmd.validate() {
            return Err(HandlerError::Rejected { reason, events: vec![] });
        }
        let email = normalize_email(&cmd.email);
        if ctx.get::<String>(&email_key(&email)).await?.is_some() {
            return Err(HandlerError::Rejected { reason: format!("{email} is already registered"), events: vec![] });
        }
        // The command's id names the user: a retried sign-up is the same one.
        let user_id = format!("u-{}", event.id);
        let user = User {
            user_id: user_id.clone(),
            email: email.clone(),
            name: cmd.name.trim().to_string(),
            password_hash: cmd.password_hash,
            customer_id: user_id.clone(),
            role: Role::Customer,
            created_at: ctx.now(),
            sessions_valid_from: None,
        };
        ctx.put(&email_key(&email), &user_id);
        ctx.put(&user_key(&user_id), &user);
        ctx.emit(SignedUp { user_id, email, name: user.name, customer_id: user.customer_id, role: Role::Customer });
        Ok(())
    }

    /// Changes a user's role.
    pub async fn set_role(&self, ctx: &mut Ctx<'_>, cmd: SetRole) -> Result<(), HandlerError> {
        if let Err(reason) = cmd.validate() {
            return Err(HandlerError::Rejected { reason, events: vec![] });
        }
        let Some(user_id) = ctx.get::<String>(&email_key(&cmd.email)).await? else {
            return Err(HandlerError::Rejected {
                reason: format!("no user {}", normalize_email(&cmd.email)),
                events: vec![],
            });
        };
        let Some(mut user) = ctx.get::<User>(&user_key(&user_id)).await? else {
            return Err(HandlerError::retryable(format!("user {user_id} is not readable yet")));
        };
        if user.role != cmd.role {
            user.role = cmd.role;
            ctx.put(&user_key(&user_id), &user);
            ctx.emit(RoleChanged { user_id, email: user.email, role: cmd.role });
        }
        Ok(())
    }

    /// Ends every session of the user issued so far.
    pub async fn log_out(&self, ctx: &mut Ctx<'_>, cmd: LogOut) -> Result<(), HandlerError> {
        if let Err(reason) = cmd.validate() {
            return Err(HandlerError::Rejected { reason, events: vec![] });
        }
        let Some(mut user) = ctx.get::<User>(&user_key(&cmd.user_id)).await? else {
            return Err(HandlerError::Rejected { reason: format!("no user {}", cmd.user_id), events: vec![] });
        };
        user.sessions_valid_from = Some(ctx.now());
        ctx.put(&user_key(&cmd.user_id), &user);
        Ok(())
    }

    async fn authenticate(&self, ctx: &QueryCtx<'_>, request: Authenticate) -> Result<UserView, QueryError> {
        let wrong = || QueryError::Unauthorized("invalid email or password".into());
        if request.password.chars().count() > MAX_PASSWORD_CHARS || request.email.chars().count() > 254 {
            return Err(wrong());
        }
        let user = match ctx.get::<String>(&email_key(&request.email)).await? {
            Some(user_id) => ctx.get::<User>(&user_key(&user_id)).await?,
            None => None,
        };
        let hash = user.as_ref().map(|u| u.password_hash.clone());
        let password = request.password;
        let matches = jetsaga_core::cpu::CpuPool::shared()
            .run(move || verify_password(&password, hash.as_deref().unwrap_or_else(|| decoy_hash())))
            .await?;
        match user {
            Some(user) if matches => Ok(user.view()),
            _ => Err(wrong()),
        }
    }
}

#[async_trait]
impl Function for Users {
    fn spec(&self) -> &'static FunctionSpec {
        &SPEC
    }

    fn prefetch(&self, event: &Envelope) -> Vec<String> {
        match event.data.get("email").and_then(|v| v.as_str()) {
            Some(email) => vec![email_key(email)],
            None => Vec::new(),
        }
    }

    async fn handle(&self, ctx: &mut Ctx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        match event.event_type.as_str() {
            USERS_CMD_SIGN_UP => self.sign_up(ctx, event).await,
            USERS_CMD_SET_ROLE => self.set_role(ctx, event.data_as()?).await,
            USERS_CMD_LOG_OUT => self.log_out(ctx, event.data_as()?).await,
            other => Err(HandlerError::malformed(format!("users does not handle {other}"))),
        }
    }

    async fn query(&self, ctx: &QueryCtx<'_>, subject: &str, request: &[u8]) -> Result<serde_json::Value, QueryError> {
        let view = match subject {
            USERS_QUERY_AUTHENTICATE => {
                let request: Authenticate = jetsaga_events::envelope::decode_json(subject, request).map_err(|_| {
                    QueryError::BadRequest("expected {\"email\": \"...\", \"password\": \"...\"}".into())
                })?;
                self.authenticate(ctx, request).await?
            }
            USERS_QUERY_GET => {
                let request: GetUser = jetsaga_events::envelope::decode_json(subject, request)?;
                ctx.get::<User>(&user_key(&request.user_id))
                    .await?
                    .ok_or_else(|| QueryError::NotFound(format!("no user {}", request.user_id)))?
                    .view()
            }
            other => return Err(QueryError::NotFound(format!("users serves no query {other}"))),
        };
        Ok(serde_json::to_value(view).expect("views serialize"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jetsaga_core::testing::TestFunction;

    const PASSWORD: &str = "correct horse battery staple";

    fn sign_up(email: &str) -> SignUp {
        SignUp { email: email.into(), name: "Ada".into(), password_hash: hash_password(PASSWORD) }
    }

    async fn login(t: &TestFunction, email: &str, password: &str) -> Result<UserView, QueryError> {
        t.query(&Authenticate { email: email.into(), password: password.into() }).await
    }

    #[tokio::test]
    async fn a_user_signs_up_once_and_logs_in_with_the_password() {
        let t = TestFunction::new(Users);
        let run = t.when(&sign_up("Ada@Example.com")).await;
        let signed: SignedUp = run.single();
        assert_eq!((signed.email.as_str(), signed.role), ("ada@example.com", Role::Customer));
        assert_eq!(signed.customer_id, signed.user_id, "the user's customer has the user's id");
        let event = serde_json::to_string(&run.emitted[0]).unwrap();
        assert!(!event.contains("argon2"), "the event carries no hash: {event}");

        let user = login(&t, "ada@example.com", PASSWORD).await.unwrap();
        assert_eq!(user.user_id, signed.user_id);
        let again = t.when(&sign_up("ADA@example.com")).await;
        assert_eq!(again.rejection_reason(), "ada@example.com is already registered");
        let me: UserView = t.query(&GetUser { user_id: signed.user_id.clone() }).await.unwrap();
        assert_eq!(me.name, "Ada");
    }

    #[tokio::test]
    async fn a_wrong_password_and_an_unknown_email_get_the_same_answer() {
        let t = TestFunction::new(Users);
        t.when(&sign_up("ada@example.com")).await.single::<SignedUp>();
        let wrong = login(&t, "ada@example.com", "guess").await.unwrap_err();
        let unknown = login(&t, "nobody@example.com", PASSWORD).await.unwrap_err();
        assert_eq!((wrong.code(), wrong.to_string()), (401, "invalid email or password".into()));
        assert_eq!((unknown.code(), unknown.to_string()), (wrong.code(), wrong.to_string()));
    }

    #[tokio::test]
    async fn invalid_sign_ups_name_every_problem_without_the_hash() {
        let t = TestFunction::new(Users);
        let bad = SignUp { email: "not an email".into(), name: " ".into(), password_hash: "plain-text".into() };
        let run = t.when(&bad).await;
        let reason = run.rejection_reason();
        assert_eq!(
            reason,
            "invalid sign-up: email must look like name@example.com (one @, a dot in the domain, no spaces); \
             name must not be empty; password_hash must be an Argon2id PHC string ($argon2id$...) of at most 512 characters"
        );
        assert!(!reason.contains("plain-text"));
    }

    #[tokio::test]
    async fn roles_change_by_email() {
        let t = TestFunction::new(Users);
        let signed: SignedUp = t.when(&sign_up("ada@example.com")).await.single();
        let changed: RoleChanged =
            t.when(&SetRole { email: "Ada@example.com".into(), role: Role::Admin }).await.single();
        assert_eq!((changed.user_id, changed.role), (signed.user_id, Role::Admin));
        t.when(&SetRole { email: "ada@example.com".into(), role: Role::Admin }).await.assert_nothing_emitted();
        let missing = t.when(&SetRole { email: "bob@example.com".into(), role: Role::Admin }).await;
        assert_eq!(missing.rejection_reason(), "no user bob@example.com");
    }

    #[tokio::test]
    async fn logging_out_ends_the_sessions_issued_so_far() {
        let t = TestFunction::new(Users);
        let signed: SignedUp = t.when(&sign_up("ada@example.com")).await.single();
        t.when(&LogOut { user_id: signed.user_id.clone() }).await.assert_nothing_emitted();
        let me: UserView = t.query(&GetUser { user_id: signed.user_id }).await.unwrap();
        assert!(me.sessions_valid_from.is_some());
        let missing = t.when(&LogOut { user_id: "u-nobody".into() }).await;
        assert_eq!(missing.rejection_reason(), "no user u-nobody");
    }

    #[test]
    fn users_never_print_their_hash() {
        let user = User {
            user_id: "u-1".into(),
            email: "a@b.c".into(),
            name: "A".into(),
            password_hash: hash_password("secret"),
            customer_id: "u-1".into(),
            role: Role::Customer,
            created_at: Utc::now(),
            sessions_valid_from: None,
        };
        assert!(!format!("{user:?}").contains("argon2"));
    }
}
