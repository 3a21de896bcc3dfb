//! Timers on `timerfd`, registered with the reactor.
//!
//! tokio's timer wheel wakes early for long timeouts (it cascades through coarser levels), so a
//! 1 s heartbeat costs two or three wakeups. A timerfd expires once, when due: an idle agent
//! wakes only for its heartbeat and its guest info check.

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::Duration;
use tokio::io::unix::AsyncFd;

/// tokio's `AsyncFd` wants `AsRawFd`; nix's `TimerFd` offers `AsFd`.
#[derive(Debug)]
struct Fd(TimerFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// A monotonic timer.
#[derive(Debug)]
pub struct Timer {
    fd: AsyncFd<Fd>,
}

impl Timer {
    /// A disarmed timer.
    pub fn new() -> io::Result<Timer> {
        let fd = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        // `AsyncFd::new` is deprecated for `register`, which is `unsafe` because it cannot know
        // the descriptor stays open; here `Fd` owns it for the AsyncFd's whole life.
        #[allow(deprecated)]
        let fd = AsyncFd::new(Fd(fd))?;
        Ok(Timer { fd })
    }

    /// A timer that fires every `period`, the first time after one period.
    pub fn interval(period: Duration) -> io::Result<Timer> {
        let t = Timer::new()?;
        let p = TimeSpec::from_duration(period.max(Duration::from_nanos(1)));
        t.fd.get_ref().0.set(
            Expiration::IntervalDelayed(p, p),
            TimerSetTimeFlags::empty(),
        )?;
        Ok(t)
    }

    /// Arms the timer once, `after` from now (zero fires at once).
    pub fn set_once(&self, after: Duration) -> io::Result<()> {
        // A zero expiration would disarm the timer: use the smallest non-zero one.
        let after = TimeSpec::from_duration(after.max(Duration::from_nanos(1)));
        self.fd
            .get_ref()
            .0
            .set(Expiration::OneShot(after), TimerSetTimeFlags::empty())?;
        Ok(())
    }

    /// Waits for the next expiration.
    pub async fn tick(&self) -> io::Result<()> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| fd.get_ref().0.wait().map_err(io::Error::from)) {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    /// Sleeps for `d`.
    pub async fn sleep(&self, d: Duration) -> io::Result<()> {
        self.set_once(d)?;
        self.tick().await
    }
}
