//! Portscope's control API: placeholder crate until the control-API issue lands.
//!
//! It will serve the documented HTTP APIs and talk to the privileged engine over a Unix
//! socket using `portscope-proto`; it never opens raw sockets itself.
