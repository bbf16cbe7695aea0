//! What `travel chaos` drives through the trip saga, and what must hold
//! afterwards, in the trip's own terms: a few flights, hotels and car
//! sites with too little capacity for every trip, so that trips are
//! refused at every step and what was held is given back.

use std::collections::BTreeMap;

use jetsaga_envelope::{Envelope, Payload};
use jetsaga_runner::chaos::{Command, Finding, History, Invariants, Rng, Start, Workload};
use serde_json::json;

use crate::events::*;
use crate::trip::{Trip, TripStatus};

/// The resources of each domain, and the share of the sagas each one can
/// serve: flights are plenty, hotels fewer, cars fewest, so trips fail at
/// each step and every compensation runs.
const DOMAINS: [Domain; 3] = [
    Domain { name: "flights", add: FLIGHTS_ADD_SEATS, free: FLIGHTS_QUERY_FREE, per_mille: 450 },
    Domain { name: "hotels", add: HOTELS_ADD_ROOMS, free: HOTELS_QUERY_FREE, per_mille: 300 },
    Domain { name: "cars", add: CARS_ADD_CARS, free: CARS_QUERY_FREE, per_mille: 220 },
];

/// Resources per domain (`flights-0`, `flights-1`, …).
const RESOURCES: usize = 3;

#[derive(Clone, Copy, Debug)]
struct Domain {
    name: &'static str,
    add: &'static str,
    free: &'static str,
    /// Capacity of each resource, in thousandths of the sagas.
    per_mille: usize,
}

impl Domain {
    fn resource(&self, i: usize) -> String {
        format!("{}-{i}", self.name)
    }

    fn capacity(&self, sagas: usize) -> u32 {
        u32::try_from((sagas * self.per_mille).div_ceil(1000)).unwrap_or(u32::MAX)
    }
}

/// Trips over a few scarce flights, hotels and car sites.
#[derive(Clone, Copy, Debug, Default)]
pub struct Trips;

impl Workload for Trips {
    fn setup(&self, sagas: usize) -> Vec<Command> {
        DOMAINS
            .iter()
            .flat_map(|domain| {
                (0..RESOURCES).map(move |i| Command {
                    subject: domain.add.to_string(),
                    body: json!({"resource": domain.resource(i), "count": domain.capacity(sagas)}),
                })
            })
            .collect()
    }

    fn start(&self, i: usize, rng: &mut Rng) -> Start {
        let trip_id = format!("trip-{i}");
        let mut pick = |d: usize| DOMAINS[d].resource(rng.below(RESOURCES));
        let itinerary = Itinerary { flight: pick(0), hotel: pick(1), car: pick(2), nights: 1 + i as u32 % 7 };
        let book = BookTrip { trip_id: trip_id.clone(), traveler: format!("traveler-{}", i % 17), itinerary };
        Start {
            key: trip_id,
            command: Command {
                subject: BookTrip::SUBJECT.into(),
                body: serde_json::to_value(book).expect("a trip serializes"),
            },
        }
    }

    fn is_terminal(&self, event: &Envelope) -> bool {
        [TripConfirmed::SUBJECT, TripFailed::SUBJECT].contains(&event.event_type.as_str())
    }
}

/// What must hold when every trip has ended.
#[derive(Clone, Copy, Debug, Default)]
pub struct TripLedger;

#[jetsaga_core::async_trait]
impl Invariants for TripLedger {
    async fn check(&self, history: &History, nats: &async_nats::Client) -> anyhow::Result<Vec<Finding>> {
        let mut findings = Vec::new();
        // What each confirmed trip keeps, by resource.
        let mut kept: BTreeMap<String, u32> = BTreeMap::new();
        for key in &history.accepted {
            let events: Vec<&Envelope> = history.of(key).collect();
            let has = |subject: &str| events.iter().filter(|e| e.event_type == subject).count();
            let confirmed = has(TripConfirmed::SUBJECT) > 0;
            let Some(start) = history.start(key) else { continue };
            let itinerary: Itinerary = serde_json::from_value(start.command.body["itinerary"].clone())?;
            if confirmed {
                for booked in [FlightBooked::SUBJECT, HotelBooked::SUBJECT, CarBooked::SUBJECT] {
                    if has(booked) != 1 {
                        findings.push(Finding::saga(key, format!("confirmed with {} × {booked}", has(booked))));
                    }
                }
                for resource in [&itinerary.flight, &itinerary.hotel, &itinerary.car] {
                    *kept.entry(resource.clone()).or_default() += 1;
                }
            } else if has(TripFailed::SUBJECT) > 0 {
                let causes =
                    [FlightRefused::SUBJECT, HotelRefused::SUBJECT, CarRefused::SUBJECT, TripDeadlinePassed::SUBJECT];
                if causes.iter().all(|cause| has(cause) == 0) {
                    findings.push(Finding::saga(key, "failed with no refusal and no deadline"));
                }
            }
            // The trip function's own record agrees with the stream.
            let answer = nats.request(GetTrip::SUBJECT, json!({"trip_id": key}).to_string().into()).await?;
            let trip: Trip = serde_json::from_slice(&answer.payload).map_err(|e| {
                anyhow::anyhow!("trips.query.get {key}: {e}: {}", String::from_utf8_lossy(&answer.payload))
            })?;
            let expected = if confirmed { TripStatus::Confirmed } else { TripStatus::Failed };
            if trip.status != expected {
                findings
                    .push(Finding::saga(key, format!("the trip says {:?}, its events say {expected:?}", trip.status)));
            }
        }
        // Nothing lost or leaked: what is free is the capacity less what confirmed trips keep.
        for domain in DOMAINS {
            for i in 0..RESOURCES {
                let resource = domain.resource(i);
                let answer = nats.request(domain.free, json!({"resource": resource}).to_string().into()).await?;
                let free: Free = serde_json::from_slice(&answer.payload)?;
                let capacity = i64::from(domain.capacity(history.sagas));
                let kept = i64::from(kept.get(&resource).copied().unwrap_or(0));
                if i64::from(free.free) != capacity - kept {
                    findings.push(Finding::run(format!(
                        "{resource}: {} free, expected {} (capacity {capacity} less {kept} kept by confirmed trips)",
                        free.free,
                        capacity - kept
                    )));
                }
            }
        }
        Ok(findings)
    }
}
