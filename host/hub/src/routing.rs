//! Routes as the hub uses them: compiled from `$edgeHub` desired properties, then installed with
//! each route's destination queue resolved, so routing a message touches no map.
//!
//! Compiling ([`RouteSet::compile`]) is pure and can be done to validate a deployment before
//! anything changes; installing swaps the whole table at once ([`crate::Hub::install`]), so a
//! message is routed by the old routes or the new ones, never a mix. Queues outlive route
//! changes: messages already queued stay queued.
//!
//! As in IoT Edge, a message matching several routes to the same endpoint is delivered once, at
//! the highest priority among them; a message matching none is dropped and counted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use verge_message::Message;
use verge_route::{Endpoint, Evaluation, Route, RouteError};

use crate::Target;
use crate::queue::{DEFAULT_LANE, Queue};

/// One route of the `$edgeHub` desired properties.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteSpec {
    /// The route's name (its key in `routes`).
    pub name: String,
    /// `FROM … WHERE … INTO …`.
    pub route: String,
    /// 0 (highest) to 9; `None` is the default priority, below 9.
    pub priority: Option<u8>,
    /// Seconds a message may wait; `None` or 0 uses the store-and-forward TTL.
    pub time_to_live_secs: Option<u32>,
}

/// A route that does not compile, by name.
#[derive(Debug, thiserror::Error)]
pub enum RouteConfigError {
    /// The route text does not parse or compile.
    #[error("route {name:?}: {error}")]
    Route {
        /// Route name.
        name: String,
        /// What is wrong.
        error: RouteError,
    },
    /// Priority outside 0..=9.
    #[error("route {name:?}: priority {priority} is out of range (0 to 9)")]
    Priority {
        /// Route name.
        name: String,
        /// The priority given.
        priority: u8,
    },
}

#[derive(Debug)]
struct Compiled {
    name: String,
    text: String,
    route: Route,
    lane: u8,
    ttl: Option<Duration>,
}

/// Compiled routes, not yet tied to queues.
#[derive(Debug, Default)]
pub struct RouteSet {
    routes: Vec<Compiled>,
}

/// The TTL a route gives its messages: its own unless 0, else the store-and-forward default;
/// a negative default means no expiry.
fn ttl(route_secs: Option<u32>, default_secs: i64) -> Option<Duration> {
    match route_secs {
        Some(secs) if secs > 0 => Some(Duration::from_secs(u64::from(secs))),
        _ => u64::try_from(default_secs).ok().map(Duration::from_secs),
    }
}

impl RouteSet {
    /// Compile every route; the first that fails is the error. `default_ttl_secs` is
    /// `storeAndForwardConfiguration.timeToLiveSecs` (negative: messages never expire).
    pub fn compile(specs: &[RouteSpec], default_ttl_secs: i64) -> Result<Self, RouteConfigError> {
        let mut routes = Vec::with_capacity(specs.len());
        for spec in specs {
            let lane = match spec.priority {
                None => DEFAULT_LANE,
                Some(p) if p <= 9 => p,
                Some(priority) => {
                    return Err(RouteConfigError::Priority {
                        name: spec.name.clone(),
                        priority,
                    });
                }
            };
            let route = Route::parse(&spec.route).map_err(|error| RouteConfigError::Route {
                name: spec.name.clone(),
                error,
            })?;
            routes.push(Compiled {
                name: spec.name.clone(),
                text: spec.route.clone(),
                route,
                lane,
                ttl: ttl(spec.time_to_live_secs, default_ttl_secs),
            });
        }
        Ok(Self { routes })
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether there are no routes.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

#[derive(Debug)]
struct Installed {
    compiled: Compiled,
    queue: Arc<Queue>,
    input: Option<Arc<str>>,
}

/// Installed routes: each with its destination queue.
#[derive(Debug, Default)]
pub(crate) struct Table {
    routes: Vec<Installed>,
}

/// Where one message goes.
#[derive(Debug)]
pub(crate) struct Destination {
    pub queue: Arc<Queue>,
    pub input: Option<Arc<str>>,
    pub lane: u8,
    pub expires: Option<Instant>,
}

impl Table {
    pub fn install(set: RouteSet, mut queue_for: impl FnMut(&Target) -> Arc<Queue>) -> Self {
        let routes = set
            .routes
            .into_iter()
            .map(|compiled| {
                let (target, input) = match compiled.route.endpoint() {
                    Endpoint::Upstream => (Target::Upstream, None),
                    Endpoint::ModuleInput { module, input } => (
                        Target::Module(Arc::from(module.as_str())),
                        Some(Arc::from(input.as_str())),
                    ),
                };
                Installed {
                    queue: queue_for(&target),
                    input,
                    compiled,
                }
            })
            .collect();
        Self { routes }
    }

    /// Route names and texts, in order.
    pub fn describe(&self) -> Vec<(String, String)> {
        self.routes
            .iter()
            .map(|r| (r.compiled.name.clone(), r.compiled.text.clone()))
            .collect()
    }

    /// Append the destinations of `message` to `out` (deduplicated by queue and input).
    pub fn destinations(&self, message: &Message, now: Instant, out: &mut Vec<Destination>) {
        let mut evaluation = Evaluation::new(message);
        let first = out.len();
        for installed in &self.routes {
            if !installed.compiled.route.matches(&mut evaluation) {
                continue;
            }
            let lane = installed.compiled.lane;
            let expires = installed.compiled.ttl.map(|ttl| now + ttl);
            let same = out[first..]
                .iter_mut()
                .find(|d| Arc::ptr_eq(&d.queue, &installed.queue) && d.input == installed.input);
            match same {
                Some(d) if lane < d.lane => {
                    d.lane = lane;
                    d.expires = expires;
                }
                Some(_) => {}
                None => out.push(Destination {
                    queue: Arc::clone(&installed.queue),
                    input: installed.input.clone(),
                    lane,
                    expires,
                }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, route: &str, priority: Option<u8>) -> RouteSpec {
        RouteSpec {
            name: name.into(),
            route: route.into(),
            priority,
            time_to_live_secs: None,
        }
    }

    #[test]
    fn ttl_rules() {
        assert_eq!(ttl(None, 7200), Some(Duration::from_secs(7200)));
        assert_eq!(ttl(Some(0), 60), Some(Duration::from_secs(60)));
        assert_eq!(ttl(Some(5), 60), Some(Duration::from_secs(5)));
        assert_eq!(ttl(None, -1), None);
    }

    #[test]
    fn bad_routes_name_themselves() {
        let err = RouteSet::compile(
            &[
                spec("r1", "FROM /* INTO $upstream", None),
                spec("bad", "FROM", None),
            ],
            7200,
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("route \"bad\": "), "{err}");
        let err =
            RouteSet::compile(&[spec("p", "FROM /* INTO $upstream", Some(10))], 7200).unwrap_err();
        assert!(err.to_string().contains("priority 10"), "{err}");
    }
}
