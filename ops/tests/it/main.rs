//! Failure tests of the whole pipeline, driving the real `agora` binary as a
//! child process against the real Postgres and NATS: processes killed with
//! SIGKILL mid-load and the broker stopped under load. What was lost: nothing.

mod crash;
mod replay;
mod startup;
mod support;
