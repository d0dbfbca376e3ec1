//! Key extractors for HTTP requests: the peer's IP, the client IP behind
//! trusted proxies, and a header such as an API key.

mod forwarded;
mod header;
mod peer;
mod trusted;

pub use forwarded::{ForwardedHeader, ForwardedIp};
pub use header::{FromHeader, HeaderKey, MAX_KEY_LEN};
pub use peer::{PeerIp, peer_ip};
pub use trusted::{InvalidProxy, TrustedProxies};
