//! The one registry of VSS result codes: number, name, title, meaning and advice (spec §13).
//!
//! Every code keeps its VSS number (ERR-CODE-1): the numbers are persisted in documents,
//! returned on the wire and shown as CLI exit details.
//! The names keep their VSS spelling, so `XML` in a name refers to our JSON documents (BCD, WMD).
//! Meanings and advice are written for Linux: mount points instead of drive letters, the journal
//! instead of the event log, the `shadowcopy` CLI and the `shadowcopyd` daemon with its config file
//! `/etc/shadowcopy/shadowcopyd.toml`.
//!
//! `docs/error-codes.md` is generated from [`REGISTRY`] by [`render_markdown`].

use std::fmt;

/// One VSS result code with its number, its symbolic name, a readable title, what it means and what
/// the user should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorCode {
    /// The HRESULT as `u32`, for example `0x80042301`.
    pub value: u32,
    /// The VSS symbolic name, for example `"VSS_E_BAD_STATE"`.
    pub name: &'static str,
    /// A short readable name in lower case, for example `"wrong call sequence"`.
    pub title: &'static str,
    /// One or two sentences: what went wrong.
    pub meaning: &'static str,
    /// What the user or the calling program should do about it.
    pub action: &'static str,
    /// The requirement IDs of the spec that define or use the code,
    /// for example `"ERR-CODE-1, BK-INIT-5"`.
    pub spec: &'static str,
}

impl ErrorCode {
    /// Whether the code means success: the high (severity) bit of the HRESULT is clear.
    pub const fn is_success(&self) -> bool {
        self.value & 0x80000000 == 0
    }
}

impl fmt::Display for ErrorCode {
    /// Writes `NAME (0xXXXXXXXX): title`,
    /// for example `VSS_E_BAD_STATE (0x80042301): wrong call sequence`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (0x{:08X}): {}", self.name, self.value, self.title)
    }
}

/// Declares one `pub const` per code, named exactly like its VSS symbol,
/// and [`REGISTRY`] in the order given.
macro_rules! codes {
    ($(
        $name:ident = $value:literal {
            title: $title:literal,
            meaning: $meaning:literal,
            action: $action:literal,
            spec: $spec:literal $(,)?
        }
    )*) => {
        $(
            #[doc = concat!("`", stringify!($value), "`: ", $title, ".")]
            #[doc = ""]
            #[doc = $meaning]
            pub const $name: ErrorCode = ErrorCode {
                value: $value,
                name: stringify!($name),
                title: $title,
                meaning: $meaning,
                action: $action,
                spec: $spec,
            };
        )*

        /// Every code, in ascending numeric order.
        pub const REGISTRY: &[ErrorCode] = &[$($name),*];
    };
}

codes! {
    S_OK = 0x00000000 {
        title: "success",
        meaning: "The operation succeeded.",
        action: "Nothing to do.",
        spec: "WST-1, PROV-R-3",
    }
    VSS_S_ASYNC_PENDING = 0x00042309 {
        title: "operation still running",
        meaning: "The asynchronous operation (gathering metadata, PrepareForBackup, DoSnapshotSet, BackupComplete, PreRestore, PostRestore, import, revert) has not finished yet.",
        action: "Keep waiting on the handle or poll it again; `shadowcopy status` shows what the session is doing. Cancel the handle only if you are going to abort the session anyway.",
        spec: "ROLE-3",
    }
    VSS_S_ASYNC_FINISHED = 0x0004230A {
        title: "operation finished",
        meaning: "The asynchronous operation completed successfully.",
        action: "Go on with the next step; after PrepareForBackup, DoSnapshotSet, BackupComplete, PreRestore and PostRestore, check the writer status first (`shadowcopy list writers`), because a writer may have vetoed.",
        spec: "ROLE-3",
    }
    VSS_S_ASYNC_CANCELLED = 0x0004230B {
        title: "operation cancelled",
        meaning: "The asynchronous operation was cancelled through its handle before it completed.",
        action: "If you did not cancel it, look in `journalctl -u shadowcopyd` for who did. A cancelled operation cannot be resumed: abort the backup if PrepareForBackup was already sent, release the session and start a new one.",
        spec: "ROLE-3",
    }
    VSS_S_SOME_SNAPSHOTS_NOT_IMPORTED = 0x00042321 {
        title: "import partly done",
        meaning: "The import of a transportable shadow copy set finished, but some shadow copies of the set could not be imported, usually because their devices or image files are not visible on this host; the others were imported.",
        action: "See which ones are missing with `shadowcopy list shadows` and `journalctl -u shadowcopyd`. Use the imported shadow copies if they are enough; otherwise delete them, make the missing devices or image files available on this host and import the set from a new transportable set (a set can be imported only once).",
        spec: "ERR-CODE-1, TRN-2",
    }
    E_NOTIMPL = 0x80004001 {
        title: "not implemented",
        meaning: "The provider or writer that received the call does not implement the operation, for example a provider that cannot revert a volume to a shadow copy.",
        action: "Check what the volume's provider supports with `shadowcopy list providers`. For a revert, copy the files back from the shadow copy instead, or keep the data on a volume whose provider supports revert.",
        spec: "ERR-CODE-1, REV-1",
    }
    VSS_E_BAD_STATE = 0x80042301 {
        title: "wrong call sequence",
        meaning: "The call is not allowed in the session's current state: it came out of order (for example DoSnapshotSet without GatherWriterMetadata, or BackupComplete after a failed DoSnapshotSet), before the session was initialised, or it is a backup call in a restore session. A writer changing the BCD outside its allowed events gets it too.",
        action: "Follow the documented call order (spec §3 for backups, §4 for restores). A session cannot be reused after a failure: abort it if PrepareForBackup was already sent, release it and start over. If a tool you did not write returns this, report it as a bug with the `journalctl -u shadowcopyd` excerpt.",
        spec: "ERR-CODE-1, BK-INIT-5, BCD-11, PROV-R-3, TS-18, TS-21",
    }
    VSS_E_UNEXPECTED = 0x80042302 {
        title: "internal error",
        meaning: "shadowcopyd hit an unexpected internal error; the cause is logged to the journal.",
        action: "Read the cause in `journalctl -u shadowcopyd` around the time of the failure and retry once. If it happens again, restart the daemon when no backup is running (`systemctl restart shadowcopyd`) and report the journal excerpt as a bug.",
        spec: "ERR-CODE-1",
    }
    VSS_E_PROVIDER_ALREADY_REGISTERED = 0x80042303 {
        title: "provider already registered",
        meaning: "A provider with this provider id is already registered with shadowcopyd.",
        action: "If it is the same provider, nothing needs to be done. To replace it, unregister the old registration first and then register the new one; a different provider needs its own id. `shadowcopy list providers` shows what is registered.",
        spec: "ERR-CODE-1",
    }
    VSS_E_PROVIDER_NOT_REGISTERED = 0x80042304 {
        title: "provider not registered",
        meaning: "The provider id given in the call is not registered with shadowcopyd, for example a plug-in provider that was never registered or was removed.",
        action: "Check the id with `shadowcopy list providers` and register the plug-in provider if it is missing, or leave the provider id out so that shadowcopyd chooses a provider for the volume itself.",
        spec: "ERR-CODE-1",
    }
    VSS_E_PROVIDER_VETO = 0x80042306 {
        title: "provider refused",
        meaning: "The provider refused the request, for example because it could not prepare or commit a shadow copy at that moment, and logged the reason with a fix to the journal. This can be transient.",
        action: "Read the provider's message in `journalctl -u shadowcopyd` and fix what it names. If it names nothing permanent, wait about 10 minutes and retry, at most 3 times.",
        spec: "ERR-CODE-1, BK-SNAP-11, PROV-R-3",
    }
    VSS_E_PROVIDER_IN_USE = 0x80042307 {
        title: "provider in use",
        meaning: "The provider is in use by a session or a shadow copy set in creation, so it cannot be unregistered now.",
        action: "Wait until the sessions that use it have finished (`shadowcopy status`) and unregister it again.",
        spec: "ERR-CODE-1",
    }
    VSS_E_OBJECT_NOT_FOUND = 0x80042308 {
        title: "object not found",
        meaning: "The shadow copy, shadow copy set, volume, writer or component named in the call does not exist. In a restore, it also means that the component's writer is not running.",
        action: "Check the id or path with `shadowcopy list shadows`, `shadowcopy list volumes` or `shadowcopy list writers`. In a restore, start the writer's application first, or restore that data without selecting the component (it is then restored without the writer).",
        spec: "ERR-CODE-1, RST-PREP-2, PROV-R-3, TS-53",
    }
    VSS_E_VOLUME_NOT_SUPPORTED = 0x8004230C {
        title: "volume not supported",
        meaning: "No provider can make a shadow copy of this volume with the requested attributes: for example ext4 on a plain disk, a pseudo or network filesystem, or a DIFFERENTIAL, PLEX or transportable request that no provider supports.",
        action: "Keep the data on a filesystem a provider supports: a btrfs subvolume, an xfs filesystem with reflink (`mkfs.xfs -m reflink=1`) or a btrfs filesystem for reflink file-set copies, or a loop-image volume whose image file lives on a reflink-capable filesystem (xfs with reflink, or btrfs). `shadowcopy list volumes` shows which mounted volumes are supported. Drop the DIFFERENTIAL, PLEX or TRANSPORTABLE modifier if you set one.",
        spec: "ERR-CODE-1, CTX-6, COMPAT-1, PROV-R-3, TS-24",
    }
    VSS_E_OBJECT_ALREADY_EXISTS = 0x8004230D {
        title: "object already exists",
        meaning: "The object the call would create already exists, for example a volume that is already in the shadow copy set or an exposure on a directory that is already in use.",
        action: "Do not add the same volume twice to a set; expose shadow copies only on empty, unused directories. `shadowcopy list shadows` shows existing shadow copies and their exposures.",
        spec: "ERR-CODE-1",
    }
    VSS_E_VOLUME_NOT_SUPPORTED_BY_PROVIDER = 0x8004230E {
        title: "volume not supported by this provider",
        meaning: "The provider named in the call cannot make a shadow copy of this volume, although another provider might.",
        action: "Leave the provider id out so that shadowcopyd picks a provider that supports the volume, or name one that `shadowcopy list volumes` lists for it.",
        spec: "ERR-CODE-1, PROV-R-3",
    }
    VSS_E_UNEXPECTED_PROVIDER_ERROR = 0x8004230F {
        title: "unexpected provider error",
        meaning: "A provider returned an error that providers are not allowed to return; shadowcopyd logged the provider, the method and the original error to the journal. This can be transient.",
        action: "Wait about 10 minutes and retry, at most 3 times. If it keeps failing, find the provider and method in `journalctl -u shadowcopyd` and report the error to the provider's author; meanwhile choose another provider for the volume.",
        spec: "ERR-CODE-1, BK-SNAP-11, PROV-R-3, TS-13",
    }
    VSS_E_CORRUPT_XML_DOCUMENT = 0x80042310 {
        title: "corrupt document",
        meaning: "A stored Backup Components Document or Writer Metadata Document cannot be read: it is truncated or is not well-formed JSON.",
        action: "Load an intact copy of the document: every backup keeps its BCD and WMDs in the backup repository (check the repository with `restic check`). Do not repair the document by hand.",
        spec: "ERR-CODE-1, RST-INIT-1",
    }
    VSS_E_INVALID_XML_DOCUMENT = 0x80042311 {
        title: "invalid document",
        meaning: "A Backup Components Document or Writer Metadata Document is well-formed but does not match the schema: an unknown `schema_version`, a missing required field or a value out of range.",
        action: "Read the field named in the error. A document from a newer or older shadowcopy version must be loaded by a compatible version; a document written by another tool must be validated against the JSON Schema under `docs/schema/`.",
        spec: "ERR-CODE-1, RST-INIT-1",
    }
    VSS_E_MAXIMUM_NUMBER_OF_VOLUMES_REACHED = 0x80042312 {
        title: "too many volumes in the set",
        meaning: "A shadow copy set holds at most 64 volumes, and this call would add the 65th. The limit is fixed.",
        action: "Leave out volumes that hold nothing you need, or split the volumes over two backups, each with its own shadow copy set.",
        spec: "ERR-CODE-1, LIMIT-1, TS-25",
    }
    VSS_E_FLUSH_WRITES_TIMEOUT = 0x80042313 {
        title: "flush writes timed out",
        meaning: "The volumes in the set could not be flushed and frozen (`syncfs`, then the filesystem freeze) within the fixed 10 s window, usually because of heavy write load or slow storage; the whole set failed and no shadow copy was kept. This can be transient.",
        action: "Wait about 10 minutes and retry, at most 3 times. If it keeps failing, run the backup when fewer writes are going on and check `dmesg` for a slow or hung disk.",
        spec: "ERR-CODE-1, BK-SNAP-11, LIMIT-5, TS-11",
    }
    VSS_E_HOLD_WRITES_TIMEOUT = 0x80042314 {
        title: "hold writes timed out",
        meaning: "Writes to the set's volumes were held (filesystems or application cgroups frozen) for longer than the fixed 10 s commit window because a provider's commit overran; shadowcopyd released the writes and failed the whole set. This can be transient.",
        action: "Wait about 10 minutes and retry, at most 3 times. If it keeps failing, look in `journalctl -u shadowcopyd` for which provider's commit was slow, and put fewer volumes into one set.",
        spec: "ERR-CODE-1, BK-SNAP-11, LIMIT-5, TS-11",
    }
    VSS_E_UNEXPECTED_WRITER_ERROR = 0x80042315 {
        title: "writer event delivery failed",
        meaning: "shadowcopyd could not deliver an event to one or more writers, or got an answer it could not understand (a broken stream or a protocol error).",
        action: "Find the failing writer with `shadowcopy list writers` and `journalctl -u shadowcopyd`, restart that writer's application or service, and retry the backup in a new session. Check that the writer was built for the daemon's protocol version.",
        spec: "ERR-CODE-1",
    }
    VSS_E_SNAPSHOT_SET_IN_PROGRESS = 0x80042316 {
        title: "another shadow copy set in progress",
        meaning: "Only one shadow copy set can be in creation on a host at a time, from StartSnapshotSet until DoSnapshotSet returns, and another one is.",
        action: "Wait for the other shadow copy set to finish (`shadowcopy status` shows it) and retry.",
        spec: "ERR-CODE-1, LIMIT-4, TS-19",
    }
    VSS_E_MAXIMUM_NUMBER_OF_SNAPSHOTS_REACHED = 0x80042317 {
        title: "too many shadow copies of the volume",
        meaning: "The volume already has the most shadow copies allowed: 512 in all, or `limits.max_client_accessible_per_volume` (default 64) for client-accessible ones.",
        action: "Delete old persistent shadow copies of the volume (`shadowcopy delete --oldest`). For client-accessible shadow copies you can also raise `limits.max_client_accessible_per_volume` in `/etc/shadowcopy/shadowcopyd.toml` (at most 512).",
        spec: "ERR-CODE-1, LIMIT-2, CFG-1, PROV-R-3, TS-25",
    }
    VSS_E_WRITER_INFRASTRUCTURE = 0x80042318 {
        title: "writer infrastructure failure",
        meaning: "The machinery that connects shadowcopyd to writers failed, so no writer could be contacted: for example the daemon's socket is missing or its writer registry failed.",
        action: "Check that the daemon runs (`systemctl status shadowcopyd`) and that `/run/shadowcopy/shadowcopyd.sock` exists, read `journalctl -u shadowcopyd`, then restart the daemon when no backup is running (`systemctl restart shadowcopyd`) and retry.",
        spec: "ERR-CODE-1",
    }
    VSS_E_WRITER_NOT_RESPONDING = 0x80042319 {
        title: "writer not responding",
        meaning: "A writer did not answer an event within its deadline, or its connection dropped; shadowcopyd marked it failed at that event. Treat it as a severe failure of that writer.",
        action: "Find the writer with `shadowcopy list writers`, check that its application is running and not hung (its own journal), restart it and retry in a new session. If the writer is only slow, raise `events.<event>_timeout_s` in `/etc/shadowcopy/shadowcopyd.toml`.",
        spec: "ERR-CODE-1, ERR-2, CFG-16",
    }
    VSS_E_WRITER_ALREADY_SUBSCRIBED = 0x8004231A {
        title: "writer already registered",
        meaning: "The writer is already registered with shadowcopyd: the same writer registered twice, or a second instance of a class registered without its own persistent instance name.",
        action: "Register each writer once. Give every instance of a multi-instance writer class its own persistent instance name. If the previous process just died, wait a few seconds until shadowcopyd has noticed the dropped connection and register again.",
        spec: "ERR-CODE-1",
    }
    VSS_E_UNSUPPORTED_CONTEXT = 0x8004231B {
        title: "unsupported context",
        meaning: "The snapshot context is not valid for this call or not supported by the provider: ALL when creating a set, attribute bits only the system may set, a modifier on CLIENT_ACCESSIBLE, or a revert to a non-persistent shadow copy.",
        action: "Use one of the documented contexts (BACKUP, FILE_SHARE_BACKUP, NAS_ROLLBACK, APP_ROLLBACK, CLIENT_ACCESSIBLE, CLIENT_ACCESSIBLE_WRITERS) with only the allowed modifiers. To revert later, create the shadow copy in a persistent context (APP_ROLLBACK or NAS_ROLLBACK).",
        spec: "ERR-CODE-1, BK-INIT-2, CTX-5, CTX-6, REV-1, TS-58",
    }
    VSS_E_VOLUME_IN_USE = 0x8004231D {
        title: "volume in use",
        meaning: "The volume cannot be taken offline for the revert because it is mounted and busy, and force was not requested.",
        action: "Stop the programs that use it (`fuser -vm <mount point>` lists them) and unmount it, then retry. Forcing the revert unmounts the volume under the programs, and their unsaved data is lost.",
        spec: "ERR-CODE-1, REV-1, TS-58",
    }
    VSS_E_MAXIMUM_DIFFAREA_ASSOCIATIONS_REACHED = 0x8004231E {
        title: "too many diff-area associations",
        meaning: "The volume already has the most diff-area stores the default provider allows. This comes from the Windows system provider; on Linux it can only happen with `[[diff_area.association]]` entries of the default provider.",
        action: "Remove an unused `[[diff_area.association]]` entry for this volume from `/etc/shadowcopy/shadowcopyd.toml` before adding another, or use a provider that needs no diff area (btrfs, reflink, loop-image).",
        spec: "ERR-CODE-1, CFG-4",
    }
    VSS_E_INSUFFICIENT_STORAGE = 0x8004231F {
        title: "not enough storage",
        meaning: "There is not enough free space to create or keep the shadow copy: the filesystem that holds the snapshots, reflink copies or image clones is full, or the diff area reached its maximum size.",
        action: "Delete old persistent shadow copies first (`shadowcopy delete --oldest`), free space on the volume, or raise `max_size` of the volume's `[[diff_area.association]]` in `/etc/shadowcopy/shadowcopyd.toml`; then retry.",
        spec: "ERR-CODE-1, BK-SNAP-11, PROV-R-3",
    }
    VSS_E_NO_SNAPSHOTS_IMPORTED = 0x80042320 {
        title: "nothing imported",
        meaning: "None of the shadow copies of the transportable set could be imported: their devices or image files are not visible on this host, the set was already imported, or a non-persistent set's creating session has ended.",
        action: "Make the transported devices or image files visible on this host and check that the BCD belongs to this set. A set can be imported only once, and a non-persistent set only while its creator's session is alive; otherwise create a new transportable set. Clean up the transported devices yourself after a failed import.",
        spec: "ERR-CODE-1, TRN-1, TRN-2",
    }
    VSS_E_SOME_SNAPSHOTS_NOT_IMPORTED = 0x80042321 {
        title: "import incomplete",
        meaning: "Some shadow copies of the transportable set could not be imported, and the operation counts that as a failure (the success variant is VSS_S_SOME_SNAPSHOTS_NOT_IMPORTED).",
        action: "See which ones are missing with `shadowcopy list shadows` and `journalctl -u shadowcopyd`, delete the partly imported set, make all its devices or image files visible on this host, and import a new transportable set.",
        spec: "ERR-CODE-1, TRN-2",
    }
    VSS_E_REVERT_IN_PROGRESS = 0x80042325 {
        title: "revert already running",
        meaning: "A revert of this volume to a shadow copy is already running. A revert cannot be cancelled.",
        action: "Wait until the running revert has finished (`shadowcopy status` shows its progress), then check the volume's content before starting anything else on it.",
        spec: "ERR-CODE-1, REV-1, TS-58",
    }
    VSS_E_REVERT_VOLUME_LOST = 0x80042326 {
        title: "volume lost during revert",
        meaning: "The volume being reverted disappeared while the revert ran (its device was removed, its loop image detached or the filesystem forcibly unmounted), so its content is undefined. This comes from Windows; on Linux it happens only when the device goes away.",
        action: "Reattach the device or loop image; the revert resumes when shadowcopyd sees the volume again. If the device is gone for good, recreate the volume and restore it from a backup.",
        spec: "ERR-CODE-1, REV-1",
    }
    VSS_E_REBOOT_REQUIRED = 0x80042327 {
        title: "reboot required",
        meaning: "The operation can be completed only at the next boot, for example a revert of a volume that cannot be unmounted while the system runs (such as the root filesystem) or files staged for restore at reboot.",
        action: "Reboot when it suits you; the operation finishes during early boot and logs its result to the journal of that boot (`journalctl -b`).",
        spec: "ERR-CODE-1",
    }
    VSS_E_TRANSACTION_FREEZE_TIMEOUT = 0x80042328 {
        title: "transaction freeze timed out",
        meaning: "A transaction resource manager registered through the freeze hook did not freeze its transactions in time, so the shadow copy set was not created.",
        action: "Retry the backup in a new session. If it keeps failing, find the resource manager in `journalctl -u shadowcopyd`; only as a last resort create the set with NOT_TRANSACTED, which gives up transactional integrity.",
        spec: "ERR-CODE-1, BK-SNAP-10, TS-26",
    }
    VSS_E_TRANSACTION_THAW_TIMEOUT = 0x80042329 {
        title: "transaction thaw timed out",
        meaning: "A transaction resource manager registered through the freeze hook did not thaw its transactions in time after the shadow copies were taken, so the set failed.",
        action: "Retry the backup in a new session. If it keeps failing, find the resource manager in `journalctl -u shadowcopyd`; only as a last resort create the set with NOT_TRANSACTED, which gives up transactional integrity.",
        spec: "ERR-CODE-1, BK-SNAP-10",
    }
    VSS_E_UNSELECTED_VOLUME = 0x8004232A {
        title: "would overwrite an unselected volume",
        meaning: "A LUN resync or fast recovery would overwrite a device that also holds a volume that was not selected for the operation.",
        action: "Select every volume on the target device too, or choose a target device that holds only the selected volumes. Skip the volume check only when you are sure the other volume may be overwritten.",
        spec: "ERR-CODE-1, TRN-3",
    }
    VSS_E_SNAPSHOT_NOT_IN_SET = 0x8004232B {
        title: "shadow copy not in the set",
        meaning: "The shadow copy id given for a resync or recovery is not part of the shadow copy set recorded in the loaded BCD.",
        action: "Load the BCD of the set the shadow copy belongs to, or use an id from that set (`shadowcopy list shadows` shows each shadow copy's set).",
        spec: "ERR-CODE-1, TRN-3",
    }
    VSS_E_NESTED_VOLUME_LIMIT = 0x8004232C {
        title: "volumes nested too deeply",
        meaning: "A volume is nested too deeply to be shadow-copied with this set, for example a loop-image volume whose image file lives on another volume of the same set, or an image inside an image.",
        action: "Put the host filesystem and the loop-image volume into separate shadow copy sets (separate backups), or back up the image file through its host volume only.",
        spec: "ERR-CODE-1, LIMIT-8",
    }
    VSS_E_VOLUME_NOT_LOCAL = 0x8004232D {
        title: "volume not local",
        meaning: "The path is on a remote or network filesystem (NFS, SMB/CIFS, sshfs and other FUSE remotes), which cannot be shadow-copied from the client side.",
        action: "Run the backup on the server that owns the filesystem, or copy the data without a shadow copy.",
        spec: "ERR-CODE-1, COMPAT-1, LIMIT-7",
    }
    VSS_E_NOT_SUPPORTED = 0x8004232F {
        title: "operation not supported",
        meaning: "This shadowcopy build or configuration does not support the requested operation, for example an optional feature (remote exposure, transport and import, LUN resync) that is not available.",
        action: "Check which features are available with `shadowcopy list providers` and the daemon's startup message in `journalctl -u shadowcopyd`, and use another way to reach the goal (for example expose the shadow copy locally and share the directory yourself).",
        spec: "ERR-CODE-1",
    }
    VSS_E_WRITERERROR_PARTIAL_FAILURE = 0x80042336 {
        title: "writer failed for some components",
        meaning: "The writer failed for some of its components only; per-component failure messages say which ones.",
        action: "Read the writer's per-component failure messages to see which components failed, keep the backup of the components that succeeded, and retry the failed components in a later backup.",
        spec: "ERR-CODE-1, ERR-2, ERR-4, WST-1",
    }
    VSS_E_WRITERERROR_INCONSISTENTSNAPSHOT = 0x800423F0 {
        title: "writer needs more volumes",
        meaning: "The shadow copy set lacks volumes that the writer's data lives on, so the writer's data in the shadow copies would be inconsistent.",
        action: "Add every volume that holds the writer's files to the set, including volumes mounted below its paths (`shadowcopy list writers` shows its paths, `findmnt` the volumes), and retry.",
        spec: "ERR-CODE-1, ERR-2, ERR-3, WST-1",
    }
    VSS_E_WRITERERROR_OUTOFRESOURCES = 0x800423F1 {
        title: "writer out of resources",
        meaning: "The writer ran out of a resource (memory, disk space, file descriptors) while handling the event.",
        action: "Reduce the load on the host: run the backup when the application is less busy, run fewer jobs at once, free memory or disk space, then retry.",
        spec: "ERR-CODE-1, ERR-2, WST-1",
    }
    VSS_E_WRITERERROR_TIMEOUT = 0x800423F2 {
        title: "writer freeze window exceeded",
        meaning: "The time between the writer's Freeze and Thaw exceeded the freeze limit that the writer declared (60 s by default), so the writer aborted itself and thawed.",
        action: "Reduce the load during the backup (fewer writes, fewer concurrent jobs) and put fewer volumes into one set so that the shadow copies are cut faster, then retry. The limit belongs to the writer and cannot be raised in shadowcopyd's configuration.",
        spec: "ERR-CODE-1, ERR-2, BK-SNAP-5, WST-1, TS-10",
    }
    VSS_E_WRITERERROR_RETRYABLE = 0x800423F3 {
        title: "writer failed, retryable",
        meaning: "The writer hit a transient problem and asks for the operation to be retried.",
        action: "Retry the whole backup or restore in a new session. If it keeps failing, restart the writer's host process or service (for example `systemctl restart <service>`) and retry.",
        spec: "ERR-CODE-1, ERR-1, ERR-2, WST-1, TS-08",
    }
    VSS_E_WRITERERROR_NONRETRYABLE = 0x800423F4 {
        title: "writer failed, not retryable",
        meaning: "The writer hit an error that retrying will not fix (a panic in a handler is reported this way too).",
        action: "Give up on shadowcopy for this writer: back up without it, knowing its data is then only crash-consistent, or stop its application during the backup. Fix the cause the writer logged (its journal) before relying on it again.",
        spec: "ERR-CODE-1, ERR-2, SEC-5, WST-1, TS-09",
    }
    VSS_E_WRITERERROR_RECOVERY_FAILED = 0x800423F5 {
        title: "writer auto-recovery failed",
        meaning: "During PostSnapshot the writer could not recover its data inside the still-writable shadow copy (roll back incomplete transactions), so its data in the shadow copy is not usable.",
        action: "Read the writer's log for the cause and retry the backup. If it keeps failing, back up without that writer's components, or use its own online backup method.",
        spec: "ERR-CODE-1, ERR-2, WST-1",
    }
    VSS_E_BREAK_REVERT_ID_FAILED = 0x800423F6 {
        title: "identity revert failed on break",
        meaning: "Breaking a hardware shadow copy set with REVERT_IDENTITY_ALL could not give the devices back their original identity, usually because an original device with that identity is still present. This comes from Windows hardware providers and applies only to hardware or transported devices on Linux.",
        action: "Detach or mask the original devices first and break again, or break with REVERT_IDENTITY_NONE so the devices keep new identities (new filesystem UUIDs).",
        spec: "ERR-CODE-1, BRK-1",
    }
    VSS_E_CANNOT_REVERT_DISKID = 0x800423FE {
        title: "cannot revert disk identity",
        meaning: "The provider could not set the disk identity (partition-table GUID or filesystem UUID) of a resynced or broken device back to the intended value. This comes from Windows disk signatures and applies only to hardware or transported devices on Linux.",
        action: "Make sure no other attached device carries the same identity, then set it by hand (`sgdisk -G`, `xfs_admin -U`, `btrfstune -u`) or retry without reverting the identity.",
        spec: "ERR-CODE-1, PROV-R-3, TRN-3",
    }
    VSS_E_RESYNC_IN_PROGRESS = 0x800423FF {
        title: "resync already running",
        meaning: "A LUN resync to this device is already running.",
        action: "Wait until the running resync has finished (`shadowcopy status` shows it) before starting another one on the same device.",
        spec: "ERR-CODE-1, TRN-3",
    }
    VSS_E_WRITER_STATUS_NOT_AVAILABLE = 0x80042409 {
        title: "writer status not available",
        meaning: "The writer's status cannot be reported because all its session-state slots are in use, usually by sessions that never gathered writer status after BackupComplete.",
        action: "Retry the status query when the system is less busy. Make sure requesters gather writer status after BackupComplete and release their sessions; `shadowcopy status` shows the open sessions.",
        spec: "ERR-CODE-1, ERR-2, WST-5, BK-END-3, TS-05",
    }
    E_ACCESSDENIED = 0x80070005 {
        title: "access denied",
        meaning: "The caller may not do this: it is not root, not in the configured backup group, not granted the role, or an `access_control` entry denies it.",
        action: "Run as root or as a member of the backup group, or grant the account the role in `/etc/shadowcopy/shadowcopyd.toml` (`access_control.\"<user>\" = \"requester\"`, `\"writer\"` or `\"both\"`). A `\"deny\"` entry overrides everything else, group membership included.",
        spec: "ERR-CODE-1, SEC-1, SEC-2, CFG-8, PROV-R-3, TS-27",
    }
    E_OUTOFMEMORY = 0x8007000E {
        title: "out of memory",
        meaning: "A process taking part in the operation (shadowcopyd, a writer or a provider) could not allocate memory.",
        action: "Free memory on the host, check the kernel log for OOM kills (`journalctl -k -g oom`) and retry.",
        spec: "ERR-CODE-1, PROV-R-3",
    }
    E_INVALIDARG = 0x80070057 {
        title: "invalid argument",
        meaning: "An argument of the call is invalid: for example a malformed id, a relative path, or a flag combination that is not allowed.",
        action: "Check the arguments against the command's `--help` or the API documentation; `journalctl -u shadowcopyd` names the rejected parameter.",
        spec: "ERR-CODE-1, PROV-R-3",
    }
}

/// Fails the build if [`REGISTRY`] is not strictly ascending: [`lookup`] relies on it.
const _: () = {
    let mut i = 1;
    while i < REGISTRY.len() {
        assert!(
            REGISTRY[i - 1].value < REGISTRY[i].value,
            "REGISTRY must be strictly ascending"
        );
        i += 1;
    }
};

/// Finds the code with this numeric value.
pub fn lookup(value: u32) -> Option<&'static ErrorCode> {
    REGISTRY
        .binary_search_by_key(&value, |code| code.value)
        .ok()
        .map(|index| &REGISTRY[index])
}

/// Finds the code with this exact symbolic name, ignoring ASCII case.
pub fn by_name(name: &str) -> Option<&'static ErrorCode> {
    REGISTRY
        .iter()
        .find(|code| code.name.eq_ignore_ascii_case(name))
}

/// The Markdown text of `docs/error-codes.md`, generated from [`REGISTRY`].
pub fn render_markdown() -> String {
    let mut out = String::from(
        "# Result codes\n\
         \n\
         This file is generated from `crates/metadata/src/codes.rs`; do not edit it by hand.\n\
         To regenerate it, run `SHADOWCOPY_BLESS=1 cargo test -p shadowcopy-metadata --test generated_docs`.\n\
         \n\
         Every result code keeps its VSS number (spec §13, ERR-CODE-1), because the numbers are stored in documents, sent on the wire and shown as CLI exit details.\n\
         Codes with the high bit clear (`S_OK` and `VSS_S_*`) mean success; all others are failures.\n\
         The names keep their VSS spelling, so `XML` in a name refers to the JSON documents (BCD and WMD).\n\
         \n\
         | Value | Name | Title | Meaning | What to do | Spec |\n\
         |---|---|---|---|---|---|\n",
    );
    for code in REGISTRY {
        out.push_str(&format!(
            "| `0x{:08X}` | `{}` | {} | {} | {} | {} |\n",
            code.value,
            code.name,
            cell(code.title),
            cell(code.meaning),
            cell(code.action),
            cell(code.spec),
        ));
    }
    out
}

/// Makes `text` safe inside one Markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// Every code of ERR-CODE-1, ERR-2 and ROLE-3, with its number copied from the spec tables.
    const EXPECTED: &[(&str, u32)] = &[
        ("S_OK", 0x00000000),
        ("VSS_S_ASYNC_PENDING", 0x00042309),
        ("VSS_S_ASYNC_FINISHED", 0x0004230A),
        ("VSS_S_ASYNC_CANCELLED", 0x0004230B),
        ("VSS_E_BAD_STATE", 0x80042301),
        ("VSS_E_UNEXPECTED", 0x80042302),
        ("VSS_E_PROVIDER_ALREADY_REGISTERED", 0x80042303),
        ("VSS_E_PROVIDER_NOT_REGISTERED", 0x80042304),
        ("VSS_E_PROVIDER_VETO", 0x80042306),
        ("VSS_E_PROVIDER_IN_USE", 0x80042307),
        ("VSS_E_OBJECT_NOT_FOUND", 0x80042308),
        ("VSS_E_VOLUME_NOT_SUPPORTED", 0x8004230C),
        ("VSS_E_OBJECT_ALREADY_EXISTS", 0x8004230D),
        ("VSS_E_VOLUME_NOT_SUPPORTED_BY_PROVIDER", 0x8004230E),
        ("VSS_E_UNEXPECTED_PROVIDER_ERROR", 0x8004230F),
        ("VSS_E_CORRUPT_XML_DOCUMENT", 0x80042310),
        ("VSS_E_INVALID_XML_DOCUMENT", 0x80042311),
        ("VSS_E_MAXIMUM_NUMBER_OF_VOLUMES_REACHED", 0x80042312),
        ("VSS_E_FLUSH_WRITES_TIMEOUT", 0x80042313),
        ("VSS_E_HOLD_WRITES_TIMEOUT", 0x80042314),
        ("VSS_E_UNEXPECTED_WRITER_ERROR", 0x80042315),
        ("VSS_E_SNAPSHOT_SET_IN_PROGRESS", 0x80042316),
        ("VSS_E_MAXIMUM_NUMBER_OF_SNAPSHOTS_REACHED", 0x80042317),
        ("VSS_E_WRITER_INFRASTRUCTURE", 0x80042318),
        ("VSS_E_WRITER_NOT_RESPONDING", 0x80042319),
        ("VSS_E_WRITER_ALREADY_SUBSCRIBED", 0x8004231A),
        ("VSS_E_UNSUPPORTED_CONTEXT", 0x8004231B),
        ("VSS_E_VOLUME_IN_USE", 0x8004231D),
        ("VSS_E_MAXIMUM_DIFFAREA_ASSOCIATIONS_REACHED", 0x8004231E),
        ("VSS_E_INSUFFICIENT_STORAGE", 0x8004231F),
        ("VSS_E_NO_SNAPSHOTS_IMPORTED", 0x80042320),
        ("VSS_S_SOME_SNAPSHOTS_NOT_IMPORTED", 0x00042321),
        ("VSS_E_SOME_SNAPSHOTS_NOT_IMPORTED", 0x80042321),
        ("VSS_E_REVERT_IN_PROGRESS", 0x80042325),
        ("VSS_E_REVERT_VOLUME_LOST", 0x80042326),
        ("VSS_E_REBOOT_REQUIRED", 0x80042327),
        ("VSS_E_TRANSACTION_FREEZE_TIMEOUT", 0x80042328),
        ("VSS_E_TRANSACTION_THAW_TIMEOUT", 0x80042329),
        ("VSS_E_UNSELECTED_VOLUME", 0x8004232A),
        ("VSS_E_SNAPSHOT_NOT_IN_SET", 0x8004232B),
        ("VSS_E_NESTED_VOLUME_LIMIT", 0x8004232C),
        ("VSS_E_VOLUME_NOT_LOCAL", 0x8004232D),
        ("VSS_E_NOT_SUPPORTED", 0x8004232F),
        ("VSS_E_WRITERERROR_INCONSISTENTSNAPSHOT", 0x800423F0),
        ("VSS_E_WRITERERROR_OUTOFRESOURCES", 0x800423F1),
        ("VSS_E_WRITERERROR_TIMEOUT", 0x800423F2),
        ("VSS_E_WRITERERROR_RETRYABLE", 0x800423F3),
        ("VSS_E_WRITERERROR_NONRETRYABLE", 0x800423F4),
        ("VSS_E_WRITERERROR_RECOVERY_FAILED", 0x800423F5),
        ("VSS_E_WRITERERROR_PARTIAL_FAILURE", 0x80042336),
        ("VSS_E_BREAK_REVERT_ID_FAILED", 0x800423F6),
        ("VSS_E_CANNOT_REVERT_DISKID", 0x800423FE),
        ("VSS_E_RESYNC_IN_PROGRESS", 0x800423FF),
        ("VSS_E_WRITER_STATUS_NOT_AVAILABLE", 0x80042409),
        ("E_ACCESSDENIED", 0x80070005),
        ("E_INVALIDARG", 0x80070057),
        ("E_OUTOFMEMORY", 0x8007000E),
        ("E_NOTIMPL", 0x80004001),
    ];

    #[test]
    fn values_strictly_ascending_and_unique() {
        for pair in REGISTRY.windows(2) {
            assert!(
                pair[0].value < pair[1].value,
                "{} is not below {}",
                pair[0],
                pair[1]
            );
        }
        let values: HashSet<u32> = REGISTRY.iter().map(|code| code.value).collect();
        assert_eq!(values.len(), REGISTRY.len());
    }

    #[test]
    fn names_unique_ignoring_case() {
        let names: HashSet<String> = REGISTRY
            .iter()
            .map(|code| code.name.to_ascii_uppercase())
            .collect();
        assert_eq!(names.len(), REGISTRY.len());
    }

    #[test]
    fn every_spec_code_present_with_its_number() {
        for &(name, value) in EXPECTED {
            let code = by_name(name).unwrap_or_else(|| panic!("{name} is missing"));
            assert_eq!(code.value, value, "{name} has the wrong number");
            assert_eq!(lookup(value).map(|code| code.name), Some(name));
        }
        assert_eq!(
            REGISTRY.len(),
            EXPECTED.len(),
            "REGISTRY has codes the spec does not list"
        );
    }

    #[test]
    fn consts_match_spec_numbers() {
        assert_eq!(VSS_E_BAD_STATE.value, 0x80042301);
        assert_eq!(VSS_S_SOME_SNAPSHOTS_NOT_IMPORTED.value, 0x00042321);
        assert_eq!(VSS_E_SOME_SNAPSHOTS_NOT_IMPORTED.value, 0x80042321);
        assert_eq!(VSS_E_WRITERERROR_PARTIAL_FAILURE.value, 0x80042336);
        assert_eq!(VSS_E_WRITER_STATUS_NOT_AVAILABLE.value, 0x80042409);
        assert_eq!(E_NOTIMPL.value, 0x80004001);
    }

    #[test]
    fn lookup_and_by_name_round_trip() {
        for code in REGISTRY {
            assert_eq!(lookup(code.value), Some(code));
            assert_eq!(by_name(code.name), Some(code));
            assert_eq!(by_name(&code.name.to_ascii_lowercase()), Some(code));
        }
        assert_eq!(lookup(0x80042305), None);
        assert_eq!(lookup(0xFFFFFFFF), None);
        assert_eq!(by_name("VSS_E_NO_SUCH_CODE"), None);
        assert_eq!(
            by_name("BAD_STATE"),
            None,
            "only the exact full name matches"
        );
        assert_eq!(by_name(""), None);
    }

    #[test]
    fn success_codes() {
        let successes = [
            S_OK,
            VSS_S_ASYNC_PENDING,
            VSS_S_ASYNC_FINISHED,
            VSS_S_ASYNC_CANCELLED,
            VSS_S_SOME_SNAPSHOTS_NOT_IMPORTED,
        ];
        for code in REGISTRY {
            let expected = code.name == "S_OK" || code.name.starts_with("VSS_S_");
            assert_eq!(code.is_success(), expected, "{code}");
            assert_eq!(successes.contains(code), expected, "{code}");
        }
        assert!(!VSS_E_SOME_SNAPSHOTS_NOT_IMPORTED.is_success());
    }

    #[test]
    fn no_empty_or_multiline_texts() {
        for code in REGISTRY {
            for (field, text) in [
                ("title", code.title),
                ("meaning", code.meaning),
                ("action", code.action),
                ("spec", code.spec),
            ] {
                assert!(
                    !text.trim().is_empty(),
                    "{} has an empty {field}",
                    code.name
                );
                assert!(
                    !text.contains('\n'),
                    "{} has a line break in its {field}",
                    code.name
                );
            }
            assert_eq!(
                code.title,
                code.title.to_lowercase(),
                "{} title is not lowercase",
                code.name
            );
            assert!(
                !code.title.ends_with('.'),
                "{} title ends with a full stop",
                code.name
            );
        }
    }

    #[test]
    fn spec_fields_name_requirement_ids() {
        for code in REGISTRY {
            for id in code.spec.split(", ") {
                let (area, number) = id.rsplit_once('-').unwrap_or(("", ""));
                assert!(
                    !area.is_empty()
                        && area.chars().all(|c| c.is_ascii_uppercase() || c == '-')
                        && !number.is_empty()
                        && number.chars().all(|c| c.is_ascii_digit()),
                    "{}: {id:?} is not a requirement ID",
                    code.name
                );
            }
        }
    }

    #[test]
    fn display_format() {
        assert_eq!(
            VSS_E_BAD_STATE.to_string(),
            "VSS_E_BAD_STATE (0x80042301): wrong call sequence"
        );
        assert_eq!(S_OK.to_string(), "S_OK (0x00000000): success");
        assert_eq!(
            VSS_S_ASYNC_FINISHED.to_string(),
            "VSS_S_ASYNC_FINISHED (0x0004230A): operation finished"
        );
    }

    #[test]
    fn markdown_lists_every_code_once_in_order() {
        let text = render_markdown();
        assert!(text.starts_with("# Result codes\n"));
        assert!(text.contains("do not edit it by hand"));
        assert!(text.contains(
            "SHADOWCOPY_BLESS=1 cargo test -p shadowcopy-metadata --test generated_docs"
        ));
        assert!(text.ends_with('\n'));
        let rows: Vec<&str> = text
            .lines()
            .filter(|line| line.starts_with("| `0x"))
            .collect();
        assert_eq!(rows.len(), REGISTRY.len());
        for (row, code) in rows.iter().zip(REGISTRY) {
            assert!(row.starts_with(&format!("| `0x{:08X}` | `{}` |", code.value, code.name)));
            // Six cells: seven unescaped separators.
            let separators = row.replace("\\|", "").matches('|').count();
            assert_eq!(separators, 7, "{row}");
        }
    }

    #[test]
    fn markdown_escapes_pipes() {
        assert_eq!(cell("a | b"), "a \\| b");
        assert_eq!(cell("a\nb"), "a b");
    }
}
