//! A call admitted before its request message exists.
//!
//! The HTTP door reads a body, learns its class from the category (the
//! cheap part) and asks for the call's slot ([`super::Admission::admit_call`],
//! the same pool, share and CPU rule as a gRPC call) before it converts,
//! validates or routes anything: under a surge the door's own work on
//! requests the node would refuse starved the ones it would take,
//! emergencies included. The slot then travels with the in-process request
//! in its extensions, so the service takes no second one. Extensions do not
//! cross the network: only a door in this process can put one there.

use std::sync::Arc;

use intake_core::Priority;
use tonic::Request;

use super::CallPermit;

/// A call slot taken at a door in this process, for a call of `class`.
#[derive(Clone)]
pub struct Admitted {
    class: Priority,
    /// Released when the door's copy and the request's are both gone.
    _slot: Arc<CallPermit>,
}

impl Admitted {
    pub fn new(class: Priority, slot: CallPermit) -> Self {
        Self {
            class,
            _slot: Arc::new(slot),
        }
    }

    pub fn class(&self) -> Priority {
        self.class
    }

    /// Puts this slot on `req`, for the service to find.
    pub fn attach<T>(&self, req: &mut Request<T>) {
        req.extensions_mut().insert(self.clone());
    }

    /// The slot a door took for `req` and its class, if one did. A slot
    /// taken for an ordinary call does not admit an emergency one (the
    /// door's table would then differ from the service's): the service
    /// then admits the call itself, as an emergency.
    pub fn of<T>(req: &Request<T>, class: Priority) -> Option<Admitted> {
        req.extensions()
            .get::<Admitted>()
            .filter(|a| a.class == class || a.class == Priority::Emergency)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::Semaphore;

    #[test]
    fn the_slot_travels_with_the_request_and_is_released_with_the_last_copy() {
        let pool = Arc::new(Semaphore::new(1));
        let slot = pool.clone().try_acquire_owned().unwrap();
        let admitted = Admitted::new(Priority::Ordinary, slot);
        let mut req = Request::new(());
        admitted.attach(&mut req);
        assert!(Admitted::of(&req, Priority::Ordinary).is_some());
        assert!(
            Admitted::of(&req, Priority::Emergency).is_none(),
            "an ordinary slot does not admit an emergency"
        );
        assert!(Admitted::of(&Request::new(()), Priority::Ordinary).is_none());
        drop(admitted);
        assert_eq!(pool.available_permits(), 0, "the request still holds it");
        drop(req);
        assert_eq!(pool.available_permits(), 1);
    }

    #[test]
    fn an_emergency_slot_admits_a_call_of_either_class() {
        let pool = Arc::new(Semaphore::new(1));
        let admitted = Admitted::new(Priority::Emergency, pool.try_acquire_owned().unwrap());
        let mut req = Request::new(());
        admitted.attach(&mut req);
        assert!(Admitted::of(&req, Priority::Ordinary).is_some());
        assert_eq!(
            Admitted::of(&req, Priority::Emergency).map(|a| a.class()),
            Some(Priority::Emergency)
        );
    }
}
