//! The trip saga's messages: one type per subject, the trip id its saga key.

use jetsaga_envelope::Payload;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a trip asks for: a seat, a room for some nights, a car.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Itinerary {
    /// The flight (`LH-400`).
    pub flight: String,
    /// The hotel (`h-harbour`).
    pub hotel: String,
    /// Where the car is picked up (`car-jfk`).
    pub car: String,
    /// Nights at the hotel.
    pub nights: u32,
}

macro_rules! messages {
    ($($(#[$doc:meta])* $name:ident = $subject:literal { $($(#[$fdoc:meta])* $field:ident : $ty:ty),* $(,)? })*) => {
        $(
            $(#[$doc])*
            #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
            pub struct $name {
                /// The trip (the saga key).
                pub trip_id: String,
                $($(#[$fdoc])* pub $field: $ty,)*
            }

            impl Payload for $name {
                const SUBJECT: &'static str = $subject;
                fn saga_key(&self) -> Option<&str> {
                    Some(&self.trip_id)
                }
            }
        )*
    };
}

messages! {
    /// `trips.cmd.book`: a traveler asks for a trip.
    BookTrip = "trips.cmd.book" { /** Who travels. */ traveler: String, /** What to book. */ itinerary: Itinerary }
    /// `trips.evt.requested`: the trip is under way; the flight is booked first.
    TripRequested = "trips.evt.requested" { /** What to book. */ itinerary: Itinerary }
    /// `flights.evt.booked`: a seat is held for the trip.
    FlightBooked = "flights.evt.booked" { /** What to book next. */ itinerary: Itinerary }
    /// `flights.evt.refused`: no seat.
    FlightRefused = "flights.evt.refused" { /** Why. */ reason: String }
    /// `hotels.evt.booked`: a room is held for the trip.
    HotelBooked = "hotels.evt.booked" { /** What to book next. */ itinerary: Itinerary }
    /// `hotels.evt.refused`: no room.
    HotelRefused = "hotels.evt.refused" { /** Why. */ reason: String }
    /// `cars.evt.booked`: a car is held for the trip.
    CarBooked = "cars.evt.booked" {}
    /// `cars.evt.refused`: no car.
    CarRefused = "cars.evt.refused" { /** Why. */ reason: String }
    /// `trips.evt.confirmed`: everything is booked.
    TripConfirmed = "trips.evt.confirmed" {}
    /// `trips.evt.failed`: the trip ends without; every step gives back what it holds.
    TripFailed = "trips.evt.failed" { /** Why. */ reason: String }
    /// `trips.evt.deadline_passed`: the trip's deadline (scheduled when it was requested).
    TripDeadlinePassed = "trips.evt.deadline_passed" {}
    /// `trips.query.get`: a trip's state.
    GetTrip = "trips.query.get" {}
}

macro_rules! capacity {
    ($($(#[$doc:meta])* $name:ident = $subject:literal),* $(,)?) => {
        $(
            $(#[$doc])*
            #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
            pub struct $name {
                /// The flight, hotel or car site.
                pub resource: String,
                /// How many more.
                pub count: u32,
            }

            impl Payload for $name {
                const SUBJECT: &'static str = $subject;
            }
        )*
    };
}

capacity! {
    /// `flights.cmd.add_seats`: seats on a flight (no saga).
    AddSeats = "flights.cmd.add_seats",
    /// `hotels.cmd.add_rooms`: rooms in a hotel (no saga).
    AddRooms = "hotels.cmd.add_rooms",
    /// `cars.cmd.add_cars`: cars at a site (no saga).
    AddCars = "cars.cmd.add_cars",
}

/// `flights.cmd.add_seats`.
pub const FLIGHTS_ADD_SEATS: &str = AddSeats::SUBJECT;
/// `hotels.cmd.add_rooms`.
pub const HOTELS_ADD_ROOMS: &str = AddRooms::SUBJECT;
/// `cars.cmd.add_cars`.
pub const CARS_ADD_CARS: &str = AddCars::SUBJECT;
/// `flights.query.free`: seats left on a flight.
pub const FLIGHTS_QUERY_FREE: &str = "flights.query.free";
/// `hotels.query.free`: rooms left in a hotel.
pub const HOTELS_QUERY_FREE: &str = "hotels.query.free";
/// `cars.query.free`: cars left at a site.
pub const CARS_QUERY_FREE: &str = "cars.query.free";

/// A `*.query.free` request and its answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Free {
    /// The flight, hotel or car site.
    pub resource: String,
    /// What is left (in an answer).
    #[serde(default)]
    pub free: u32,
}
