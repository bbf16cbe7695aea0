//! The trip: takes the booking command, starts the chain (flight, then
//! hotel, then car), and ends the trip when the car is booked, when any
//! step refuses, or when its deadline passes, whichever comes first.

use std::time::Duration;

use chrono::{DateTime, Utc};
use jetsaga_core::{Ctx, Function, FunctionSpec, HandlerError, QueryCtx, QueryError, async_trait};
use jetsaga_envelope::{Envelope, Payload};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::events::*;

/// The saga's name in metrics (`saga="trip"`) and its schedules' owner.
const SAGA: &str = "trip";

/// Where a trip stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TripStatus {
    /// Booking under way.
    Pending,
    /// Flight, hotel and car booked.
    Confirmed,
    /// Ended without: everything held was given back.
    Failed,
}

/// A trip, as stored and as `trips.query.get` answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Trip {
    /// The trip.
    pub trip_id: String,
    /// Who travels.
    pub traveler: String,
    /// What was asked for.
    pub itinerary: Itinerary,
    /// Where it stands.
    pub status: TripStatus,
    /// Why it failed.
    pub reason: Option<String>,
    /// When it was asked for.
    pub requested_at: DateTime<Utc>,
}

/// The trip function: `deadline` is how long a trip may take in all.
#[derive(Clone, Copy, Debug)]
pub struct TripFunction {
    /// How long a trip may take before it fails and gives everything back.
    pub deadline: Duration,
}

jetsaga_envelope::inputs! {
    /// What the trip function takes: the traveler's booking, and what the
    /// steps and its own deadline answer.
    pub enum TripInput {
        accepts {
            Book(BookTrip),
        }
        subscribes {
            CarBooked(CarBooked),
            FlightRefused(FlightRefused),
            HotelRefused(HotelRefused),
            CarRefused(CarRefused),
            DeadlinePassed(TripDeadlinePassed),
        }
    }
}

/// Its declaration.
pub static TRIP: FunctionSpec = FunctionSpec {
    name: "trip",
    description: "Trips: book a flight, a hotel and a car, or none of them",
    subscribes: TripInput::SUBSCRIBES,
    accepts: TripInput::ACCEPTS,
    direct: &[],
    // Its deadlines live on `schedules.trip.<key>`: declared, so the stream
    // keeps them and readers take what they publish (the engine refuses a
    // schedule its function does not declare).
    emits: &[
        TripRequested::SUBJECT,
        TripConfirmed::SUBJECT,
        TripFailed::SUBJECT,
        TripDeadlinePassed::SUBJECT,
        "schedules.trip.>",
    ],
    queries: &[GetTrip::SUBJECT],
    key_field: Some("trip_id"),
};

fn key(trip_id: &str) -> String {
    format!("trip/{trip_id}")
}

impl TripFunction {
    async fn book(&self, ctx: &mut Ctx<'_>, book: BookTrip) -> Result<(), HandlerError> {
        let it = &book.itinerary;
        let missing = [("trip_id", &book.trip_id), ("flight", &it.flight), ("hotel", &it.hotel), ("car", &it.car)]
            .into_iter()
            .find(|(_, value)| value.trim().is_empty());
        if let Some((field, _)) = missing {
            return Err(HandlerError::Malformed(format!("{}: `{field}` must not be empty", BookTrip::SUBJECT)));
        }
        if ctx.get::<Trip>(&key(&book.trip_id)).await?.is_some() {
            return Ok(()); // booked before under this id
        }
        let now = ctx.now();
        let trip = Trip {
            trip_id: book.trip_id.clone(),
            traveler: book.traveler,
            itinerary: book.itinerary.clone(),
            status: TripStatus::Pending,
            reason: None,
            requested_at: now,
        };
        ctx.put(&key(&trip.trip_id), &trip);
        ctx.saga_started(SAGA);
        ctx.emit(TripRequested { trip_id: book.trip_id.clone(), itinerary: book.itinerary });
        let due = now + chrono::Duration::from_std(self.deadline).unwrap_or(chrono::Duration::MAX);
        ctx.schedule(SAGA, &book.trip_id.clone(), due, TripDeadlinePassed { trip_id: book.trip_id });
        Ok(())
    }

    /// Ends a pending trip; a trip that ended already stays as it is.
    async fn end(
        &self,
        ctx: &mut Ctx<'_>,
        trip_id: &str,
        failure: Option<String>,
        fired: bool,
    ) -> Result<(), HandlerError> {
        let Some(mut trip) = ctx.get::<Trip>(&key(trip_id)).await? else {
            return Err(HandlerError::Malformed(format!("no trip {trip_id}")));
        };
        if trip.status != TripStatus::Pending {
            return Ok(());
        }
        let outcome = match &failure {
            None => "confirmed",
            Some(_) => "failed",
        };
        trip.status = if failure.is_some() { TripStatus::Failed } else { TripStatus::Confirmed };
        trip.reason.clone_from(&failure);
        ctx.put(&key(trip_id), &trip);
        ctx.saga_ended(SAGA, outcome, trip.requested_at);
        let trip_id = trip_id.to_string();
        match (failure, fired) {
            // The deadline fired: its schedule is gone already.
            (Some(reason), true) => ctx.emit(TripFailed { trip_id, reason }),
            (Some(reason), false) => ctx.unschedule(SAGA, &trip_id.clone(), TripFailed { trip_id, reason }),
            (None, _) => ctx.unschedule(SAGA, &trip_id.clone(), TripConfirmed { trip_id }),
        }
        Ok(())
    }
}

#[async_trait]
impl Function for TripFunction {
    fn spec(&self) -> &'static FunctionSpec {
        &TRIP
    }

    async fn handle(&self, ctx: &mut Ctx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        match TripInput::decode(event)? {
            TripInput::Book(booking) => self.book(ctx, booking).await,
            TripInput::CarBooked(e) => self.end(ctx, &e.trip_id, None, false).await,
            TripInput::FlightRefused(e) => {
                self.end(ctx, &e.trip_id, Some(format!("flight: {}", e.reason)), false).await
            }
            TripInput::HotelRefused(e) => self.end(ctx, &e.trip_id, Some(format!("hotel: {}", e.reason)), false).await,
            TripInput::CarRefused(e) => self.end(ctx, &e.trip_id, Some(format!("car: {}", e.reason)), false).await,
            TripInput::DeadlinePassed(e) => {
                let reason = format!("not booked within {:?}", self.deadline);
                self.end(ctx, &e.trip_id, Some(reason), true).await
            }
        }
    }

    async fn query(&self, ctx: &QueryCtx<'_>, subject: &str, request: &[u8]) -> Result<serde_json::Value, QueryError> {
        let asked: GetTrip =
            serde_json::from_slice(request).map_err(|e| QueryError::BadRequest(format!("{subject}: {e}")))?;
        let trip: Trip = ctx
            .get(&key(&asked.trip_id))
            .await?
            .ok_or_else(|| QueryError::NotFound(format!("no trip {}", asked.trip_id)))?;
        Ok(serde_json::to_value(trip).expect("trips serialize"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jetsaga_core::testing::TestFunction;

    fn booking() -> BookTrip {
        let itinerary =
            Itinerary { flight: "LH-400".into(), hotel: "h-harbour".into(), car: "car-jfk".into(), nights: 2 };
        BookTrip { trip_id: "t-1".into(), traveler: "ada".into(), itinerary }
    }

    #[tokio::test]
    async fn a_booking_starts_the_chain_under_a_deadline_and_a_refusal_ends_it() {
        let trips = TestFunction::new(TripFunction { deadline: Duration::from_secs(60) });
        let run = trips.when(&booking()).await;
        // The deadline is scheduled now and published later, so only the request is out.
        assert_eq!(run.emitted_types(), [TripRequested::SUBJECT]);
        let refused = trips.when(&HotelRefused { trip_id: "t-1".into(), reason: "full".into() }).await;
        // Published now, ending the deadline.
        assert_eq!(refused.single::<TripFailed>().reason, "hotel: full");
        assert_eq!(refused.unscheduled, [jetsaga_core::schedule::name_for("trip", "t-1")]);
        let trip: Trip = trips.state(&key("t-1")).await.unwrap();
        assert_eq!(trip.status, TripStatus::Failed);
        // A late car changes nothing.
        trips.when(&CarBooked { trip_id: "t-1".into() }).await.assert_nothing_emitted();
    }
}
