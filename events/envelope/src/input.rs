//! A function's typed input: one declaration gives the enum its handler
//! matches on and the subjects its declaration lists.
//!
//! ```
//! use jetsaga_envelope::{Payload, inputs};
//! # use schemars::JsonSchema;
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
//! # pub struct BookTrip { pub trip_id: String }
//! # impl Payload for BookTrip { const SUBJECT: &'static str = "trips.cmd.book"; }
//! # #[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
//! # pub struct CarBooked { pub trip_id: String }
//! # impl Payload for CarBooked { const SUBJECT: &'static str = "cars.evt.booked"; }
//!
//! inputs! {
//!     /// What the trip function takes.
//!     pub enum TripInput {
//!         accepts {
//!             Book(BookTrip),
//!         }
//!         subscribes {
//!             CarBooked(CarBooked),
//!         }
//!     }
//! }
//!
//! assert_eq!(TripInput::ACCEPTS, ["trips.cmd.book"]);
//! assert_eq!(TripInput::SUBSCRIBES, ["cars.evt.booked"]);
//! ```
//!
//! `accepts` are the commands taken over request/reply, `subscribes` what
//! the function's consumer takes from the stream: the two lists of its
//! `FunctionSpec` (`accepts: TripInput::ACCEPTS, subscribes:
//! TripInput::SUBSCRIBES`). `TripInput::decode(&envelope)` gives the
//! variant of the envelope's type, or an error naming the subject and what
//! the function takes; the handler's `match` is then checked by the
//! compiler, and a subject cannot be handled without being declared, or
//! declared without being handled.

/// Declares a function's typed input; see the [module](self).
#[macro_export]
macro_rules! inputs {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $(accepts { $($(#[$ameta:meta])* $avariant:ident($aty:ty)),* $(,)? })?
            $(subscribes { $($(#[$smeta:meta])* $svariant:ident($sty:ty)),* $(,)? })?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq)]
        $vis enum $name {
            $($($(#[$ameta])* $avariant($aty),)*)?
            $($($(#[$smeta])* $svariant($sty),)*)?
        }

        impl $name {
            /// The commands taken over request/reply (the declaration's `accepts`).
            pub const ACCEPTS: &'static [&'static str] = &[$($(<$aty as $crate::Payload>::SUBJECT,)*)?];
            /// What the consumer takes from the stream (the declaration's `subscribes`).
            pub const SUBSCRIBES: &'static [&'static str] = &[$($(<$sty as $crate::Payload>::SUBJECT,)*)?];

            /// The input `envelope` carries, decoded as the type of its subject.
            pub fn decode(envelope: &$crate::Envelope) -> ::core::result::Result<Self, $crate::DecodeError> {
                let subject = envelope.event_type.as_str();
                $($(
                    if subject == <$aty as $crate::Payload>::SUBJECT {
                        return envelope.data_as::<$aty>().map(Self::$avariant);
                    }
                )*)?
                $($(
                    if subject == <$sty as $crate::Payload>::SUBJECT {
                        return envelope.data_as::<$sty>().map(Self::$svariant);
                    }
                )*)?
                ::core::result::Result::Err($crate::DecodeError::new(
                    subject,
                    "type",
                    format!(
                        "{} takes none of this: it accepts {:?} and subscribes to {:?}",
                        stringify!($name),
                        Self::ACCEPTS,
                        Self::SUBSCRIBES
                    ),
                ))
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use crate::{Envelope, Payload};
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
    struct Book {
        trip_id: String,
        nights: u32,
    }
    impl Payload for Book {
        const SUBJECT: &'static str = "trips.cmd.book";
    }

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
    struct Refused {
        trip_id: String,
    }
    impl Payload for Refused {
        const SUBJECT: &'static str = "cars.evt.refused";
    }

    crate::inputs! {
        enum Input {
            accepts { Book(Book) }
            subscribes { Refused(Refused) }
        }
    }

    crate::inputs! {
        enum OnlyEvents {
            subscribes { Refused(Refused) }
        }
    }

    fn envelope(subject: &str, data: serde_json::Value) -> Envelope {
        Envelope {
            id: "e1".into(),
            event_type: subject.into(),
            saga_key: None,
            correlation_id: "c1".into(),
            causation_id: None,
            occurred_at: chrono::Utc::now(),
            version: crate::ENVELOPE_VERSION,
            data,
        }
    }

    #[test]
    fn the_declaration_gives_the_subjects_and_decodes_by_subject() {
        assert_eq!(Input::ACCEPTS, ["trips.cmd.book"]);
        assert_eq!(Input::SUBSCRIBES, ["cars.evt.refused"]);
        assert!(OnlyEvents::ACCEPTS.is_empty());
        let book = envelope("trips.cmd.book", serde_json::json!({"trip_id": "t-1", "nights": 2}));
        assert_eq!(Input::decode(&book), Ok(Input::Book(Book { trip_id: "t-1".into(), nights: 2 })));
        let refused = envelope("cars.evt.refused", serde_json::json!({"trip_id": "t-1"}));
        assert_eq!(Input::decode(&refused), Ok(Input::Refused(Refused { trip_id: "t-1".into() })));
        assert_eq!(OnlyEvents::SUBSCRIBES, ["cars.evt.refused"]);
        assert_eq!(OnlyEvents::decode(&refused), Ok(OnlyEvents::Refused(Refused { trip_id: "t-1".into() })));
        assert!(OnlyEvents::decode(&book).is_err(), "a command it does not accept");
    }

    #[test]
    fn a_bad_body_names_its_field_and_a_stranger_names_what_is_taken() {
        let bad = envelope("trips.cmd.book", serde_json::json!({"trip_id": "t-1", "nights": "two"}));
        let error = Input::decode(&bad).unwrap_err();
        assert_eq!((error.what.as_str(), error.path.as_str()), ("trips.cmd.book", "nights"));
        let stranger = envelope("hotels.evt.booked", serde_json::json!({}));
        let error = Input::decode(&stranger).unwrap_err().to_string();
        assert!(error.contains("hotels.evt.booked") && error.contains("Input takes none of this"), "{error}");
        assert!(error.contains(r#"["trips.cmd.book"]"#) && error.contains(r#"["cars.evt.refused"]"#), "{error}");
    }
}
