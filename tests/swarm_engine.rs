//! The Swarm engine's tests, in a test binary of their own: they put this
//! machine's Docker engine in swarm mode (and leave it as they found it),
//! which touches every container and network on it. Cargo runs test binaries
//! one after another, so nothing else of the suite runs meanwhile.

mod harness;

mod swarm;
