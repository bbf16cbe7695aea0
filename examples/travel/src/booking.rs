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

/// The flight step's declaration.
pub static FLIGHT: FunctionSpec = FunctionSpec {
    name: "flights",
    description: "Flights: a seat per trip, given back if the trip fails",
    subscribes: &[TripRequested::SUBJECT, TripFailed::SUBJECT, TripConfirmed::SUBJECT],
    accepts: &[FLIGHTS_ADD_SEATS],
    direct: &[],
    emits: &[FlightBooked::SUBJECT, FlightRefused::SUBJECT],
    queries: &[FLIGHTS_QUERY_FREE],
    key_field: Some("trip_id"),
};

/// The hotel step's declaration.
pub static HOTEL: FunctionSpec = FunctionSpec {
    name: "hotels",
    description: "Hotels: a room per trip, given back if the trip fails",
    subscribes: &[FlightBooked::SUBJECT, TripFailed::SUBJECT, TripConfirmed::SUBJECT],
    accepts: &[HOTELS_ADD_ROOMS],
    direct: &[],
    emits: &[HotelBooked::SUBJECT, HotelRefused::SUBJECT],
    queries: &[HOTELS_QUERY_FREE],
    key_field: Some("trip_id"),
};

/// The car step's declaration.
pub static CAR: FunctionSpec = FunctionSpec {
    name: "cars",
    description: "Cars: a car per trip, given back if the trip fails",
    subscribes: &[HotelBooked::SUBJECT, TripFailed::SUBJECT, TripConfirmed::SUBJECT],
    accepts: &[CARS_ADD_CARS],
    direct: &[],
    emits: &[CarBooked::SUBJECT, CarRefused::SUBJECT],
    queries: &[CARS_QUERY_FREE],
    key_field: Some("trip_id"),
};

impl Booking {
    /// The event that asks this step to book, and what it books.
    fn request(self, event: &Envelope) -> Result<Option<(String, Itinerary)>, HandlerError> {
        let (trip_id, itinerary) = match (self, event.event_type.as_str()) {
            (Self::Flight, TripRequested::SUBJECT) => {
                let e: TripRequested = event.data_as()?;
                (e.trip_id, e.itinerary)
            }
            (Self::Hotel, FlightBooked::SUBJECT) => {
                let e: FlightBooked = event.data_as()?;
                (e.trip_id, e.itinerary)
            }
            (Self::Car, HotelBooked::SUBJECT) => {
                let e: HotelBooked = event.data_as()?;
                (e.trip_id, e.itinerary)
            }
            _ => return Ok(None),
        };
        Ok(Some((trip_id, itinerary)))
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
        if let Some((trip_id, itinerary)) = self.request(event)? {
            return self.book(ctx, trip_id, itinerary).await;
        }
        match event.event_type.as_str() {
            TripFailed::SUBJECT => {
                let failed: TripFailed = event.data_as()?;
                if let Some(held) = HELD.release(ctx, &failed.trip_id).await? {
                    let free: u32 = ctx.get(&free_key(&held.resource)).await?.unwrap_or(0);
                    ctx.put(&free_key(&held.resource), &(free + 1));
                }
                Ok(())
            }
            TripConfirmed::SUBJECT => {
                let confirmed: TripConfirmed = event.data_as()?;
                HELD.consume(ctx, &confirmed.trip_id).await?;
                Ok(())
            }
            subject if self.spec().accepts.contains(&subject) => {
                let add: AddCapacity = event.data_into()?;
                if add.resource.is_empty() {
                    return Err(HandlerError::Malformed(format!("{subject}: `resource` must not be empty")));
                }
                let free: u32 = ctx.get(&free_key(&add.resource)).await?.unwrap_or(0);
                ctx.put(&free_key(&add.resource), &free.saturating_add(add.count));
                Ok(())
            }
            other => Err(HandlerError::Malformed(format!("{} does not take {other}", self.spec().name))),
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
