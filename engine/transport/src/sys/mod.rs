//! Linux raw-socket backend. (Being written: see the transport task.)
