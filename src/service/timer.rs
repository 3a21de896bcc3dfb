//! Timers on `timerfd`, registered with the reactor.
//!
//! tokio's timer wheel wakes early for long timeouts (it cascades through coarser levels), so a
//! 1 s heartbeat costs two or three wakeups. A timerfd expires once, when due: an idle agent
//! wakes only for its heartbeat and its guest info check.

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use std::io;
use std::os::fd::AsFd;
use std::time::Duration;
use tokio::net::unix::pipe;

/// A monotonic timer.
///
/// The reactor watches a duplicate of the timer's descriptor, registered for readability only
/// through tokio's safe owned-descriptor constructor (`AsyncFd`'s constructors are `unsafe`
/// now); both descriptors share the one timer, so arming either arms it.
#[derive(Debug)]
pub struct Timer {
    timer: TimerFd,
    ready: pipe::Receiver,
}

impl Timer {
    /// A disarmed timer.
    pub fn new() -> io::Result<Timer> {
        let timer = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        let watched = timer.as_fd().try_clone_to_owned()?;
        let ready = pipe::Receiver::from_owned_fd_unchecked(watched)?;
        Ok(Timer { timer, ready })
    }

    /// A timer that fires every `period`, the first time after one period.
    pub fn interval(period: Duration) -> io::Result<Timer> {
        let t = Timer::new()?;
        let p = TimeSpec::from_duration(period.max(Duration::from_nanos(1)));
        t.timer.set(
            Expiration::IntervalDelayed(p, p),
            TimerSetTimeFlags::empty(),
        )?;
        Ok(t)
    }

    /// Arms the timer once, `after` from now (zero fires at once).
    pub fn set_once(&self, after: Duration) -> io::Result<()> {
        // A zero expiration would disarm the timer: use the smallest non-zero one.
        let after = TimeSpec::from_duration(after.max(Duration::from_nanos(1)));
        self.timer
            .set(Expiration::OneShot(after), TimerSetTimeFlags::empty())?;
        Ok(())
    }

    /// Waits for the next expiration.
    pub async fn tick(&self) -> io::Result<()> {
        let mut expirations = [0u8; 8];
        loop {
            self.ready.readable().await?;
            match self.ready.try_read(&mut expirations) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Sleeps for `d`.
    pub async fn sleep(&self, d: Duration) -> io::Result<()> {
        self.set_once(d)?;
        self.tick().await
    }
}
