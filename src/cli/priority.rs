//! Runs the process at a lower scheduling priority. Before the runtime starts, so every
//! thread (they inherit it) runs at it.

use std::io;

/// Lowers this thread's priority to `nice`; threads started afterwards inherit it. A
/// process already started lower (`nice -n 15 pika-migrate …`) stays where it is.
pub fn lower_priority(nice: u8) -> io::Result<()> {
    let nice = libc::c_int::from(nice);
    if nice <= current_nice()? {
        return Ok(());
    }
    // SAFETY: setpriority reads its three integer arguments and nothing else; `who` 0
    // is the calling thread (Linux keeps nice per thread).
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// This thread's nice value.
fn current_nice() -> io::Result<libc::c_int> {
    // getpriority may return -1 as a value, so errno, cleared first, tells an error.
    // SAFETY: __errno_location is this thread's errno; getpriority reads its arguments.
    let nice = unsafe {
        *libc::__errno_location() = 0;
        libc::getpriority(libc::PRIO_PROCESS, 0)
    };
    let errno = io::Error::last_os_error();
    if nice == -1 && errno.raw_os_error().is_some_and(|e| e != 0) {
        Err(errno)
    } else {
        Ok(nice)
    }
}
