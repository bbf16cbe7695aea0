//! The three booking steps (flight, hotel, car): one shape, three
//! declarations. Each holds one unit of a resource for a trip, refuses when
//! none is left, gives it back when the trip fails and keeps it when the
//! trip is confirmed (the hold primitive keeps these rules once each).

use jetsaga_core::hold::Holds;
use jetsaga_core::{Ctx, Function, FunctionSpec, HandlerError, QueryCtx, QueryError, async_trait};
use jetsaga_envelope::{Envelope, Payload};
use serde::{Deserialize, Serialize};

use crate::events::*;

/// What a step holds for one trip.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    /// The flight, hotel or car site.
    pub resource: String,
}

static HELD: Holds<Held> = Holds::new("held");

fn free_key(resource: &str) -> String {
    format!("free/{resource}")
}

/// Which of the three steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Booking {
    /// Books a seat once the trip is requested.
    Flight,
    /// Books a room once the flight is booked.
    Hotel,
    /// Books a car once the room is booked.
    Car,
}

jetsaga_envelope::inputs! {
    /// What the flight step takes: seats, and the trip's events.
    pub enum FlightInput {
        accepts {
            AddSeats(AddSeats),
        }
        subscribes {
            Requested(TripRequested),
            Failed(TripFailed),
            Confirmed(TripConfirmed),
        }
    }
}

jetsaga_envelope::inputs! {
    /// What the hotel step takes: rooms, the booked flight, the trip's end.
    pub enum HotelInput {
        accepts {
            AddRooms(AddRooms),
        }
        subscribes {
            FlightBooked(FlightBooked),
            Failed(TripFailed),
            Confirmed(TripConfirmed),
        }
    }
}

jetsaga_envelope::inputs! {
    /// What the car step takes: cars, the booked room, the trip's end.
    pub enum CarInput {
        accepts {
            AddCars(AddCars),
        }
        subscribes {
            HotelBooked(HotelBooked),
            Failed(TripFailed),
            Confirmed(TripConfirmed),
        }
    }
}

/// The flight step's declaration.
pub static FLIGHT: FunctionSpec = FunctionSpec {
    name: "flights",
    description: "Flights: a seat per trip, given back if the trip fails",
    subscribes: FlightInput::SUBSCRIBES,
    accepts: FlightInput::ACCEPTS,
    direct: &[],
    emits: &[FlightBooked::SUBJECT, FlightRefused::SUBJECT],
    queries: &[FLIGHTS_QUERY_FREE],
    key_field: Some("trip_id"),
};

/// The hotel step's declaration.
pub static HOTEL: FunctionSpec = FunctionSpec {
    name: "hotels",
    description: "Hotels: a room per trip, given back if the trip fails",
    subscribes: HotelInput::SUBSCRIBES,
    accepts: HotelInput::ACCEPTS,
    direct: &[],
    emits: &[HotelBooked::SUBJECT, HotelRefused::SUBJECT],
    queries: &[HOTELS_QUERY_FREE],
    key_field: Some("trip_id"),
};

/// The car step's declaration.
pub static CAR: FunctionSpec = FunctionSpec {
    name: "cars",
    description: "Cars: a car per trip, given back if the trip fails",
    subscribes: CarInput::SUBSCRIBES,
    accepts: CarInput::ACCEPTS,
    direct: &[],
    emits: &[CarBooked::SUBJECT, CarRefused::SUBJECT],
    queries: &[CARS_QUERY_FREE],
    key_field: Some("trip_id"),
};

/// What any of the three steps is asked to do, whichever its input type.
enum Step {
    /// Book for the trip.
    Book(String, Itinerary),
    /// The trip failed: give back what is held for it.
    Release(String),
    /// The trip is confirmed: keep what is held for it.
    Keep(String),
    /// More capacity for a resource.
    Add(String, u32),
}

impl Booking {
    /// What `event` asks of this step, decoded as the type of its subject.
    fn decode(self, event: &Envelope) -> Result<Step, HandlerError> {
        Ok(match self {
            Self::Flight => match FlightInput::decode(event)? {
                FlightInput::AddSeats(add) => Step::Add(add.resource, add.count),
                FlightInput::Requested(e) => Step::Book(e.trip_id, e.itinerary),
                FlightInput::Failed(e) => Step::Release(e.trip_id),
                FlightInput::Confirmed(e) => Step::Keep(e.trip_id),
            },
            Self::Hotel => match HotelInput::decode(event)? {
                HotelInput::AddRooms(add) => Step::Add(add.resource, add.count),
                HotelInput::FlightBooked(e) => Step::Book(e.trip_id, e.itinerary),
                HotelInput::Failed(e) => Step::Release(e.trip_id),
                HotelInput::Confirmed(e) => Step::Keep(e.trip_id),
            },
            Self::Car => match CarInput::decode(event)? {
                CarInput::AddCars(add) => Step::Add(add.resource, add.count),
                CarInput::HotelBooked(e) => Step::Book(e.trip_id, e.itinerary),
                CarInput::Failed(e) => Step::Release(e.trip_id),
                CarInput::Confirmed(e) => Step::Keep(e.trip_id),
            },
        })
    }

    fn resource(self, itinerary: &Itinerary) -> &str {
        match self {
            Self::Flight => &itinerary.flight,
            Self::Hotel => &itinerary.hotel,
            Self::Car => &itinerary.car,
        }
    }

    fn booked(self, ctx: &mut Ctx<'_>, trip_id: String, itinerary: Itinerary) {
        match self {
            Self::Flight => ctx.emit(FlightBooked { trip_id, itinerary }),
            Self::Hotel => ctx.emit(HotelBooked { trip_id, itinerary }),
            Self::Car => ctx.emit(CarBooked { trip_id }),
        }
    }

    fn refused(self, ctx: &mut Ctx<'_>, trip_id: String, reason: String) {
        match self {
            Self::Flight => ctx.emit(FlightRefused { trip_id, reason }),
            Self::Hotel => ctx.emit(HotelRefused { trip_id, reason }),
            Self::Car => ctx.emit(CarRefused { trip_id, reason }),
        }
    }

    async fn book(self, ctx: &mut Ctx<'_>, trip_id: String, itinerary: Itinerary) -> Result<(), HandlerError> {
        if HELD.decided(ctx, &trip_id).await? {
            return Ok(()); // a repeat, or the trip ended before this came
        }
        let resource = self.resource(&itinerary).to_string();
        let free: u32 = ctx.get(&free_key(&resource)).await?.unwrap_or(0);
        if free == 0 {
            HELD.block(ctx, &trip_id).await?;
            let reason = format!("nothing left of {resource}");
            self.refused(ctx, trip_id, reason);
            return Ok(());
        }
        ctx.put(&free_key(&resource), &(free - 1));
        HELD.hold(ctx, &trip_id, Held { resource });
        self.booked(ctx, trip_id, itinerary);
        Ok(())
    }
}

#[async_trait]
impl Function for Booking {
    fn spec(&self) -> &'static FunctionSpec {
        match self {
            Self::Flight => &FLIGHT,
            Self::Hotel => &HOTEL,
            Self::Car => &CAR,
        }
    }

    async fn handle(&self, ctx: &mut Ctx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        match self.decode(event)? {
            Step::Book(trip_id, itinerary) => self.book(ctx, trip_id, itinerary).await,
            Step::Release(trip_id) => {
                if let Some(held) = HELD.release(ctx, &trip_id).await? {
                    let free: u32 = ctx.get(&free_key(&held.resource)).await?.unwrap_or(0);
                    ctx.put(&free_key(&held.resource), &(free + 1));
                }
                Ok(())
            }
            Step::Keep(trip_id) => {
                HELD.consume(ctx, &trip_id).await?;
                Ok(())
            }
            Step::Add(resource, count) => {
                if resource.is_empty() {
                    let subject = &event.event_type;
                    return Err(HandlerError::Malformed(format!("{subject}: `resource` must not be empty")));
                }
                let free: u32 = ctx.get(&free_key(&resource)).await?.unwrap_or(0);
                ctx.put(&free_key(&resource), &free.saturating_add(count));
                Ok(())
            }
        }
    }

    async fn query(&self, ctx: &QueryCtx<'_>, subject: &str, request: &[u8]) -> Result<serde_json::Value, QueryError> {
        let asked: Free =
            serde_json::from_slice(request).map_err(|e| QueryError::BadRequest(format!("{subject}: {e}")))?;
        let free: u32 = ctx.get(&free_key(&asked.resource)).await?.unwrap_or(0);
        Ok(serde_json::to_value(Free { resource: asked.resource, free }).expect("answers serialize"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jetsaga_core::testing::TestFunction;

    fn itinerary() -> Itinerary {
        Itinerary { flight: "LH-400".into(), hotel: "h-harbour".into(), car: "car-jfk".into(), nights: 2 }
    }

    #[tokio::test]
    async fn a_seat_is_held_once_and_given_back_once() {
        let flights = TestFunction::new(Booking::Flight);
        flights.given(&free_key("LH-400"), &1u32).await;
        let requested = TripRequested { trip_id: "t-1".into(), itinerary: itinerary() };
        let booked = flights.when(&requested).await;
        assert_eq!(booked.single::<FlightBooked>().trip_id, "t-1");
        assert_eq!(flights.state::<u32>(&free_key("LH-400")).await, Some(0));
        // The same request again takes nothing.
        flights.when(&requested).await.assert_nothing_emitted();
        // The trip fails: the seat comes back, once.
        let failed = TripFailed { trip_id: "t-1".into(), reason: "car: none".into() };
        flights.when(&failed).await;
        flights.when(&failed).await;
        assert_eq!(flights.state::<u32>(&free_key("LH-400")).await, Some(1));
    }

    #[tokio::test]
    async fn no_room_left_is_a_refusal_and_a_late_request_after_the_trip_ended_takes_nothing() {
        let hotels = TestFunction::new(Booking::Hotel);
        let booked = FlightBooked { trip_id: "t-1".into(), itinerary: itinerary() };
        let refused = hotels.when(&booked).await;
        assert_eq!(refused.single::<HotelRefused>().reason, "nothing left of h-harbour");

        hotels.given(&free_key("h-harbour"), &3u32).await;
        hotels.when(&TripFailed { trip_id: "t-2".into(), reason: "deadline".into() }).await;
        let late = hotels.when(&FlightBooked { trip_id: "t-2".into(), itinerary: itinerary() }).await;
        late.assert_nothing_emitted();
        assert_eq!(hotels.state::<u32>(&free_key("h-harbour")).await, Some(3));
    }
}
