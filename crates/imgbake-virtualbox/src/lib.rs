//! imgbake's VirtualBox builder: OVAs and Vagrant boxes, built under QEMU.
//!
//! [`format`](mod@format) reads and writes the files: OVF envelopes, streamOptimized VMDKs, manifests, OVAs and
//! Vagrant boxes (`virtualbox` and `libvirt` providers).

pub mod format;
