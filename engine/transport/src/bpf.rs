//! Classic BPF program that lets only candidate scan replies reach user space.
//! (Being written: see the transport task.)
