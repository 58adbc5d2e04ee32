//! The process's open-file limit. Every camera session holds sockets, and when they take
//! the last descriptors the API cannot accept, the store cannot open its journal and every
//! camera fails over and over ("Too many open files") in a reconnect storm. So the daemon
//! raises its soft limit to the hard one at start, keeps a fixed reserve for everything
//! that is not a camera, and shares the rest out as session slots: a camera without a
//! slot waits for one instead of failing.

use std::io;

use crate::source::Transport;

/// Descriptors kept for what is not a camera session: the API's connections
/// ([`crate::api::MAX_CONNECTIONS`]), the store's database and journal files (one per
/// thread that opens it), evidence being written, sinks' sockets and files, ONNX Runtime,
/// logs and the binary's own libraries.
pub const RESERVED: u64 = crate::api::MAX_CONNECTIONS as u64 + 128;

/// The soft and hard open-file limits after [`raise_open_files`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    pub soft: u64,
    pub hard: u64,
    /// The soft limit before it was raised, when it was.
    pub raised_from: Option<u64>,
}

/// The soft and hard `RLIMIT_NOFILE` now.
pub fn open_files() -> io::Result<OpenFiles> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct passed to it.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(OpenFiles {
        soft: limit.rlim_cur,
        hard: limit.rlim_max,
        raised_from: None,
    })
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit: systemd and most shells start
/// services at 1024, far below a camera list's needs, and the hard limit is what the
/// administrator actually allows.
pub fn raise_open_files() -> io::Result<OpenFiles> {
    let now = open_files()?;
    if now.soft >= now.hard {
        return Ok(now);
    }
    let limit = libc::rlimit {
        rlim_cur: now.hard,
        rlim_max: now.hard,
    };
    // SAFETY: setrlimit only reads the struct passed to it.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(OpenFiles {
        soft: now.hard,
        hard: now.hard,
        raised_from: Some(now.soft),
    })
}

/// Descriptors one camera session holds: the RTSP connection, plus an RTP and an RTCP
/// socket when the media comes over UDP.
pub fn descriptors_per_session(transport: Transport) -> u64 {
    match transport {
        Transport::Tcp => 1,
        Transport::Udp => 3,
    }
}

/// How many camera sessions fit under `soft` open files, with [`RESERVED`] kept back.
pub fn session_slots(soft: u64, transport: Transport) -> usize {
    let slots = soft.saturating_sub(RESERVED) / descriptors_per_session(transport);
    usize::try_from(slots).unwrap_or(usize::MAX)
}

/// The warning for a camera list that needs more sessions than fit, with the numbers and
/// the setting that fixes it; `None` when they fit.
pub fn shortfall(files: OpenFiles, transport: Transport, wanted: usize) -> Option<String> {
    let slots = session_slots(files.soft, transport);
    if wanted <= slots {
        return None;
    }
    let per_session = descriptors_per_session(transport);
    let needed = RESERVED + wanted as u64 * per_session;
    Some(format!(
        "the open-file limit ({soft}, hard limit {hard}) fits {slots} of the {wanted} camera \
         sessions this camera list needs ({per_session} descriptor(s) each over {transport:?}, \
         {RESERVED} kept for the API and the store): the other cameras wait for a free slot. \
         Raise the limit to at least {needed} (systemd: LimitNOFILE={needed}; shell: ulimit -n {needed})",
        soft = files.soft,
        hard = files.hard,
    ))
}

/// Whether an I/O error means the process (not the camera) ran out of something.
pub fn is_exhaustion(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_leave_the_reserve_and_count_udp_sockets() {
        assert_eq!(
            session_slots(1024, Transport::Tcp),
            1024 - RESERVED as usize
        );
        assert_eq!(
            session_slots(1024, Transport::Udp),
            (1024 - RESERVED as usize) / 3
        );
        assert_eq!(session_slots(100, Transport::Tcp), 0);
    }

    #[test]
    fn a_shortfall_names_the_numbers_and_the_fix() {
        let files = OpenFiles {
            soft: 1024,
            hard: 1024,
            raised_from: None,
        };
        assert_eq!(shortfall(files, Transport::Tcp, 100), None);
        let warning = shortfall(files, Transport::Tcp, 1500).unwrap();
        let slots = 1024 - RESERVED;
        assert!(
            warning.starts_with(&format!(
                "the open-file limit (1024, hard limit 1024) fits {slots} of the 1500 camera sessions"
            )),
            "{warning}"
        );
        assert!(
            warning.contains(&format!("LimitNOFILE={}", RESERVED + 1500)),
            "{warning}"
        );
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let files = raise_open_files().unwrap();
        assert_eq!(files.soft, files.hard);
        let again = raise_open_files().unwrap();
        assert_eq!((again.soft, again.raised_from), (files.hard, None));
    }

    #[test]
    fn exhaustion_is_told_from_camera_failures() {
        assert!(is_exhaustion(&io::Error::from_raw_os_error(libc::EMFILE)));
        assert!(!is_exhaustion(&io::Error::from_raw_os_error(
            libc::ECONNREFUSED
        )));
    }
}
