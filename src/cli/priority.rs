//! Runs the process at a lower scheduling priority. Before the runtime starts, so every
//! thread (they inherit it) runs at it.

/// Lowers this thread's priority to `nice`; threads started afterwards inherit it.
/// Lowering needs no privilege, so this fails only on a system without `setpriority`.
pub fn lower_priority(nice: u8) -> std::io::Result<()> {
    if nice == 0 {
        return Ok(());
    }
    // SAFETY: setpriority reads its three integer arguments and nothing else; `who` 0
    // is the calling thread (Linux keeps nice per thread).
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, libc::c_int::from(nice)) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
