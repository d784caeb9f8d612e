//! Test harness shared by the coordinator's integration tests: a scripted in-process writer that
//! records every event with its (virtual) time and can fail, hang, be slow, vanish or edit its BCD
//! records at any event, plus an environment that checks the thaw invariant after every test.

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use shadowcopy_coordinator::sim::{EventLog, SimProvider};
use shadowcopy_coordinator::{
    Coordinator, CoordinatorConfig, EndpointError, Provider, WriterEndpoint, WriterEvent,
    WriterEventKind, WriterFailure, WriterRegistration, WriterReply,
};
use shadowcopy_metadata::bcd::WriterComponents;
use shadowcopy_metadata::codes::ErrorCode;
use shadowcopy_metadata::enums::{
    ApplicationLevel, ComponentType, RestoreMethod, SourceType, SubscribeMask, UsageType,
    WriterRestore,
};
use shadowcopy_metadata::wmd::{Component, FileDescriptor, RestoreMethodSpec, WriterIdentity};
use shadowcopy_metadata::{WriterClassId, WriterInstanceId, WriterMetadata};
use tokio::time::Instant;

/// An edit a writer makes to its own records.
pub type EditFn = Arc<dyn Fn(&mut WriterComponents) + Send + Sync>;

/// What the test writer does when an event arrives.
#[derive(Clone)]
pub enum Behavior {
    /// Succeed at once.
    Ok,
    /// Veto with this code and message (ERR-1).
    Fail(ErrorCode, &'static str),
    /// Never answer.
    Hang,
    /// Answer after this long.
    Delay(Duration),
    /// The connection drops: the writer thaws itself and answers nothing more.
    Gone,
    /// Edit the records last seen, then succeed, sending them back.
    Edit(EditFn),
}

/// One event as the writer received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub event: WriterEvent,
}

/// A component of the test writer's WMD: (logical path, name, selectable for backup, selectable for restore).
#[derive(Debug, Clone)]
pub struct TestComponent {
    pub logical_path: String,
    pub name: String,
    pub selectable_for_backup: bool,
    pub selectable_for_restore: bool,
}

/// A scripted writer.
pub struct TestWriter {
    pub name: String,
    pub class_id: WriterClassId,
    pub instance_name: Option<String>,
    pub level: ApplicationLevel,
    pub freeze_timeout: Duration,
    pub subscribe_mask: SubscribeMask,
    pub components: Vec<TestComponent>,
    script: Mutex<HashMap<WriterEventKind, Behavior>>,
    log: EventLog,
    received: Mutex<Vec<Received>>,
    last_components: Mutex<Option<WriterComponents>>,
    disconnected: Mutex<bool>,
    id: Mutex<Option<WriterInstanceId>>,
}

impl TestWriter {
    pub fn new(name: &str, level: ApplicationLevel, log: &EventLog) -> Self {
        TestWriter {
            name: name.to_string(),
            class_id: WriterClassId::new_random(),
            instance_name: None,
            level,
            freeze_timeout: Duration::from_secs(60),
            subscribe_mask: SubscribeMask::DEFAULT,
            components: vec![TestComponent {
                logical_path: String::new(),
                name: "data".into(),
                selectable_for_backup: true,
                selectable_for_restore: true,
            }],
            script: Mutex::new(HashMap::new()),
            log: log.clone(),
            received: Mutex::new(Vec::new()),
            last_components: Mutex::new(None),
            disconnected: Mutex::new(false),
            id: Mutex::new(None),
        }
    }

    pub fn with_freeze_timeout(mut self, timeout: Duration) -> Self {
        self.freeze_timeout = timeout;
        self
    }

    pub fn with_class(mut self, class_id: WriterClassId) -> Self {
        self.class_id = class_id;
        self
    }

    pub fn with_components(mut self, components: &[(&str, &str, bool, bool)]) -> Self {
        self.components = components
            .iter()
            .map(|(lp, name, backup, restore)| TestComponent {
                logical_path: lp.to_string(),
                name: name.to_string(),
                selectable_for_backup: *backup,
                selectable_for_restore: *restore,
            })
            .collect();
        self
    }

    /// Sets what happens at `kind`.
    pub fn on(&self, kind: WriterEventKind, behavior: Behavior) -> &Self {
        self.script.lock().unwrap().insert(kind, behavior);
        self
    }

    pub fn registration(&self) -> WriterRegistration {
        WriterRegistration {
            instance_name: self.instance_name.clone(),
            application_level: self.level,
            freeze_timeout: self.freeze_timeout,
            subscribe_mask: self.subscribe_mask,
            ..WriterRegistration::new(self.class_id, self.name.clone())
        }
    }

    pub fn id(&self) -> WriterInstanceId {
        self.id.lock().unwrap().expect("registered")
    }

    pub fn set_id(&self, id: WriterInstanceId) {
        *self.id.lock().unwrap() = Some(id);
    }

    /// The writer's WMD, the same every time (ROLE-6).
    pub fn metadata(&self) -> WriterMetadata {
        WriterMetadata {
            schema_version: shadowcopy_metadata::SCHEMA_VERSION,
            identity: WriterIdentity {
                writer_name: self.name.clone(),
                class_id: self.class_id,
                instance_id: WriterInstanceId::nil(),
                instance_name: self.instance_name.clone(),
                usage_type: UsageType::UserData,
                source_type: SourceType::Other,
                version: None,
            },
            restore_method: RestoreMethodSpec {
                method: RestoreMethod::RestoreIfCanReplace,
                service: None,
                user_procedure: None,
                writer_restore: WriterRestore::Always,
                reboot_required: false,
            },
            backup_schema: Default::default(),
            excludes: Vec::new(),
            exclude_from_snapshot: Vec::new(),
            alternate_location_mappings: Vec::new(),
            components: self
                .components
                .iter()
                .enumerate()
                .map(|(i, c)| Component {
                    component_type: ComponentType::FileGroup,
                    logical_path: c.logical_path.clone(),
                    name: c.name.clone(),
                    caption: None,
                    icon: None,
                    restore_metadata: false,
                    notify_on_backup_complete: true,
                    selectable_for_backup: c.selectable_for_backup,
                    selectable_for_restore: c.selectable_for_restore,
                    component_flags: Default::default(),
                    files: vec![FileDescriptor::new(
                        format!("/srv/{}/{i}", self.name),
                        "*",
                        true,
                    )],
                    database_files: Vec::new(),
                    database_log_files: Vec::new(),
                    dependencies: Vec::new(),
                })
                .collect(),
        }
    }

    /// Every event received, in order.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// The kinds of the events received, in order.
    pub fn kinds(&self) -> Vec<WriterEventKind> {
        self.received().iter().map(|r| r.event.kind()).collect()
    }

    pub fn count(&self, kind: WriterEventKind) -> usize {
        self.kinds().iter().filter(|k| **k == kind).count()
    }

    pub fn time_of(&self, kind: WriterEventKind) -> Option<Instant> {
        self.received()
            .iter()
            .find(|r| r.event.kind() == kind)
            .map(|r| r.at)
    }

    /// The connection ended (the writer SDK thaws itself then, architecture §2).
    pub fn mark_disconnected(&self) {
        *self.disconnected.lock().unwrap() = true;
        self.log.push(&self.name, "disconnected");
    }

    /// Whether the writer is left frozen: it got Freeze and then neither Thaw, Abort nor a
    /// disconnection (architecture §8).
    pub fn left_frozen(&self) -> bool {
        let mut frozen = false;
        for event in self.log.events_of(&self.name) {
            match event.as_str() {
                "Freeze" => frozen = true,
                "Thaw" | "Abort" | "disconnected" => frozen = false,
                _ => {}
            }
        }
        frozen
    }

    fn reply_for(&self, event: &WriterEvent) -> WriterReply {
        match event {
            WriterEvent::Identify => WriterReply::identified(self.metadata()),
            _ => WriterReply::ok(),
        }
    }
}

#[async_trait]
impl WriterEndpoint for TestWriter {
    async fn deliver(&self, event: WriterEvent) -> Result<WriterReply, EndpointError> {
        if *self.disconnected.lock().unwrap() {
            return Err(EndpointError::Gone);
        }
        let kind = event.kind();
        self.log.push(&self.name, kind.name());
        self.received.lock().unwrap().push(Received {
            at: Instant::now(),
            event: event.clone(),
        });
        match &event {
            WriterEvent::PrepareForBackup { components, .. }
            | WriterEvent::PostSnapshot { components, .. }
            | WriterEvent::BackupComplete { components, .. }
            | WriterEvent::PreRestore { components, .. }
            | WriterEvent::PostRestore { components, .. } => {
                *self.last_components.lock().unwrap() = Some(components.clone());
            }
            _ => {}
        }
        let behavior = self
            .script
            .lock()
            .unwrap()
            .get(&kind)
            .cloned()
            .unwrap_or(Behavior::Ok);
        match behavior {
            Behavior::Ok => Ok(self.reply_for(&event)),
            Behavior::Fail(code, message) => Ok(WriterReply::failed(WriterFailure {
                code,
                application_code: 42,
                message: message.to_string(),
            })),
            Behavior::Hang => {
                std::future::pending::<()>().await;
                unreachable!()
            }
            Behavior::Delay(delay) => {
                tokio::time::sleep(delay).await;
                Ok(self.reply_for(&event))
            }
            Behavior::Gone => {
                self.mark_disconnected();
                Err(EndpointError::Gone)
            }
            Behavior::Edit(edit) => {
                let mut components = self
                    .last_components
                    .lock()
                    .unwrap()
                    .clone()
                    .expect("an event with components came first");
                edit(&mut components);
                Ok(WriterReply {
                    components: Some(components),
                    ..self.reply_for(&event)
                })
            }
        }
    }
}

/// A coordinator with simulated providers and test writers sharing one event log.
pub struct Env {
    pub coord: Coordinator,
    pub log: EventLog,
    pub providers: Vec<Arc<SimProvider>>,
    pub writers: Vec<Arc<TestWriter>>,
}

impl Env {
    /// A coordinator with one provider per name, all logging into one log.
    pub fn new(config: CoordinatorConfig, provider_names: &[&str]) -> Self {
        let log = EventLog::new();
        let providers: Vec<Arc<SimProvider>> = provider_names
            .iter()
            .map(|name| Arc::new(SimProvider::new(*name).with_log(log.clone())))
            .collect();
        Self::with_providers(config, providers, log)
    }

    pub fn with_providers(
        config: CoordinatorConfig,
        providers: Vec<Arc<SimProvider>>,
        log: EventLog,
    ) -> Self {
        let dyn_providers: Vec<Arc<dyn Provider>> = providers
            .iter()
            .map(|p| p.clone() as Arc<dyn Provider>)
            .collect();
        Env {
            coord: Coordinator::new(config, dyn_providers),
            log,
            providers,
            writers: Vec::new(),
        }
    }

    /// Registers a writer and keeps it for the thaw check.
    pub fn add(&mut self, writer: TestWriter) -> Arc<TestWriter> {
        let writer = Arc::new(writer);
        let id = self
            .coord
            .register_writer(writer.registration(), writer.clone())
            .expect("registration");
        writer.set_id(id);
        self.writers.push(writer.clone());
        writer
    }

    /// A new writer on this environment's log.
    pub fn writer(&self, name: &str, level: ApplicationLevel) -> TestWriter {
        TestWriter::new(name, level, &self.log)
    }

    /// The connection of `writer` ends.
    pub fn disconnect(&self, writer: &TestWriter) {
        writer.mark_disconnected();
        assert!(self.coord.unregister_writer(writer.id()));
    }

    /// Every shadow copy any provider still holds.
    pub fn surviving_snapshots(&self) -> usize {
        self.providers.iter().map(|p| p.snapshots().len()).sum()
    }

    /// Waits for background work, then checks the thaw invariant for every writer.
    pub async fn finish(&self) {
        self.coord.wait_background().await;
        for writer in &self.writers {
            assert!(
                !writer.left_frozen(),
                "writer {} was left frozen; its events: {:?}",
                writer.name,
                self.log.events_of(&writer.name)
            );
        }
    }

    /// The (source, event) pairs of the log, without queries and support checks.
    pub fn sequence(&self) -> Vec<(String, String)> {
        self.log
            .sequence()
            .into_iter()
            .filter(|(_, e)| e != "Query" && e != "IsVolumeSupported")
            .collect()
    }
}

/// A config with short timeouts, so that paused-clock tests stay readable.
pub fn test_config() -> CoordinatorConfig {
    CoordinatorConfig::default()
}

/// A session after InitializeForBackup and GatherWriterMetadata.
pub async fn gathered(env: &Env) -> shadowcopy_coordinator::BackupSession {
    let mut session = env.coord.open_backup_session();
    session.initialize_for_backup(None).unwrap();
    session.gather_writer_metadata().await.unwrap();
    session
}

/// Adds the first component of every writer that answered Identify.
pub fn add_first_components(session: &mut shadowcopy_coordinator::BackupSession) {
    for metadata in session.writer_metadata().unwrap() {
        let component = &metadata.components[0];
        session
            .add_component(
                metadata.identity.instance_id,
                &component.logical_path,
                &component.name,
            )
            .unwrap();
    }
}

/// A session through PrepareForBackup with every writer's first component and these volumes.
pub async fn prepared(env: &Env, volumes: &[&str]) -> shadowcopy_coordinator::BackupSession {
    let mut session = gathered(env).await;
    add_first_components(&mut session);
    session.start_snapshot_set().unwrap();
    for volume in volumes {
        session.add_to_snapshot_set(volume, None).await.unwrap();
    }
    session.prepare_for_backup().await.unwrap();
    session
}

/// The status of one writer in a session.
pub fn status_of(
    session: &shadowcopy_coordinator::BackupSession,
    writer: &TestWriter,
) -> shadowcopy_coordinator::WriterStatus {
    session
        .gather_writer_status()
        .unwrap()
        .into_iter()
        .find(|s| s.instance_id == writer.id())
        .expect("the writer is listed")
}
