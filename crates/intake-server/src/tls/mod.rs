//! TLS on a node's one gRPC port, and mutual TLS between nodes.
//!
//! A node serves clients and peers on the same port (`--listen`; the cluster
//! map keeps one address per node). When TLS is on, the node runs its own
//! accept loop ([`incoming`]) instead of tonic's, for two reasons: the
//! certificates can then be swapped without a restart (each new connection
//! takes the configuration current at its handshake, [`reload`]), and each
//! connection is classified once, at its handshake, as a verified peer or
//! not ([`ConnInfo`]). Client certificates are requested but optional: a
//! client without one connects; a certificate that is presented must chain
//! to the cluster CA (`--peer-ca`), and one that does marks the connection as
//! a peer. The gate ([`crate::auth`]) then lets only peers call the Raft
//! transport or send forwarded requests without a token.
//!
//! The port presents `--tls-cert` if given, else the node's peer
//! certificate. Peers verify it against the cluster CA, so with both set the
//! cluster CA must sign `--tls-cert` too (or use one certificate for both).
//!
//! The HTTP door (`--api`) serves TLS with the same certificate and the same
//! accept loop ([`HttpsListener`]), speaking HTTP/1.1 and asking for no
//! client certificate; plain HTTP there is answered 400.

mod files;
mod incoming;
mod reload;

pub use files::{PeerFiles, TlsError, TlsFiles, TlsState};
pub use incoming::{ConnInfo, HttpsListener, TlsConn, TlsIncoming, incoming};
pub use reload::TlsReloader;
