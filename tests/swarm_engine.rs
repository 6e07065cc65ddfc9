//! The Swarm engine's tests, in a test binary of their own: each makes a
//! swarm of Docker engines of its own (never this machine's: see
//! `harness::swarm`), in namespaces of its own, one test at a time.
//! `scripts/test.sh` runs this binary beside the rest of the suite.

mod harness;

mod swarm;
