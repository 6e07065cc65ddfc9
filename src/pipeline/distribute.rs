//! `[build] on = "first"`: the first selected host builds the release, the
//! others receive its images, so every host runs the very same image ids.
//! Through a registry (`[build] registry`: the builder pushes, the hosts pull)
//! or, without one, streamed over SSH: `docker save` of only the images a host
//! lacks, compressed, into that host's `docker load`. Each host then names the
//! images for its release and the ids it ends up with are checked against the
//! builder's before any host switches.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, ReadBuf};

use crate::activation::Record;
use crate::compose::image_name;
use crate::config::Config;
use crate::fleet::{step, Fleet, Member, QUICK_TIMEOUT, STEP_TIMEOUT};
use crate::release;
use crate::remote::Script;
use crate::report::events::{Event, Reporter, Step};

/// A built image: its service and its id (`sha256:...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Built {
    pub service: String,
    pub id: String,
}

/// Images saved on the builder, compressed, in a local file: it and its size.
type Saved = (tempfile::NamedTempFile, u64);

/// How often a stream's progress is told.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Where the release was built: one of the fleet's hosts, or this machine.
pub(super) struct Builder<'a> {
    pub member: &'a Member,
    pub record: &'a Record,
}

impl Builder<'_> {
    fn is(&self, m: &Member) -> bool {
        std::ptr::eq(self.member, m)
    }
}

/// Gets the builder's images to every host of the fleet that is not the
/// builder and names them for the release there (`records`, in member
/// order). One result per host, in member order (the builder's is `Ok`).
pub(super) async fn distribute(
    config: &Config,
    builder: &Builder<'_>,
    fleet: &Fleet,
    records: &[Record],
    reporter: &dyn Reporter,
) -> Vec<Result<(), String>> {
    let built = match built_images(builder.member, builder.record).await {
        Ok(b) => b,
        Err(e) => {
            let why = format!(
                "cannot read the images the build made on {}: {e}",
                builder.member.host.name
            );
            return fleet.members.iter().map(|_| Err(why.clone())).collect();
        }
    };
    // What each host needs: the builder's images of the services it builds.
    let wanted: Vec<Vec<Built>> = records
        .iter()
        .map(|r| {
            r.build
                .iter()
                .filter_map(|s| built.iter().find(|b| &b.service == s).cloned())
                .collect()
        })
        .collect();
    let missing = lacking(builder, fleet, &wanted).await;
    tell_lacking(
        builder,
        fleet,
        &built,
        &missing,
        config.build.registry.as_deref(),
        reporter,
    );
    let needed = missing.iter().any(|m| matches!(m, Ok(ids) if !ids.is_empty()));
    // Per host, once its images are there: the registry references to take off.
    let delivered: Vec<Result<Vec<String>, String>> = match (&config.build.registry, needed) {
        (_, false) => missing.iter().map(|m| m.clone().map(|_| Vec::new())).collect(),
        (Some(registry), true) => through_registry(builder, fleet, registry, &built, &missing, reporter).await,
        (None, true) => streamed(builder, fleet, &missing, reporter).await,
    };
    // Every other host names the images for its release and says which ids
    // its override now names: the builder's, or the deploy stops here.
    let named = fleet
        .for_each_with(
            wanted.into_iter().zip(delivered).zip(records.iter()).collect(),
            |m, ((wanted, delivered), record)| async move {
                if builder.is(m) {
                    return Ok(());
                }
                adopt(m, record, &wanted, &delivered?).await
            },
        )
        .await;
    named
}

/// The ids of the images release `record` names on the builder, by service.
async fn built_images(builder: &Member, record: &Record) -> Result<Vec<Built>, String> {
    let out = builder
        .remote
        .check(
            &release::image_ids(&builder.layout, &record.release).into(),
            Some(QUICK_TIMEOUT),
        )
        .await
        .map_err(|e| e.to_string())?;
    let ids: Vec<&str> = out.stdout.split_whitespace().collect();
    if ids.len() != record.build.len() {
        return Err(format!(
            "the release names {} images for {} built services",
            ids.len(),
            record.build.len()
        ));
    }
    Ok(record
        .build
        .iter()
        .zip(ids)
        .map(|(service, id)| Built {
            service: service.clone(),
            id: id.to_string(),
        })
        .collect())
}

/// Per host, the ids of its wanted images its engine lacks (none for the builder).
async fn lacking(builder: &Builder<'_>, fleet: &Fleet, wanted: &[Vec<Built>]) -> Vec<Result<Vec<String>, String>> {
    fleet
        .for_each_with(wanted.iter().collect(), |m, wanted| async move {
            if builder.is(m) || wanted.is_empty() {
                return Ok(Vec::new());
            }
            let ids: Vec<&str> = wanted.iter().map(|b| b.id.as_str()).collect();
            let out = m
                .remote
                .check(&release::missing_images(&ids).into(), Some(QUICK_TIMEOUT))
                .await
                .map_err(|e| e.to_string())?;
            let mut missing: Vec<String> = out.stdout.split_whitespace().map(str::to_string).collect();
            missing.dedup();
            Ok(missing)
        })
        .await
}

/// Says, per host, which of the builder's images it lacks and how they come.
fn tell_lacking(
    builder: &Builder<'_>,
    fleet: &Fleet,
    built: &[Built],
    missing: &[Result<Vec<String>, String>],
    registry: Option<&str>,
    reporter: &dyn Reporter,
) {
    for (m, missing) in fleet.members.iter().zip(missing) {
        let Ok(ids) = missing else { continue };
        if builder.is(m) {
            continue;
        }
        let services: Vec<&str> = built
            .iter()
            .filter(|b| ids.contains(&b.id))
            .map(|b| b.service.as_str())
            .collect();
        let message = match (services.len(), registry) {
            (0, _) => "has every image the build made; nothing to send".to_string(),
            (n, Some(r)) => format!("pulls {n} image(s) it lacks from {r}: {}", services.join(", ")),
            (n, None) => format!("gets {n} image(s) it lacks over SSH: {}", services.join(", ")),
        };
        reporter.event(Event::Info {
            host: Some(m.host.name.clone()),
            message,
        });
    }
}

/// The registry reference of a service's image for a release.
fn reference(registry: &str, service: &str, tag: &str) -> String {
    format!("{registry}/{}:{tag}", service.to_lowercase())
}

/// The builder pushes every built image (`<registry>/<service>:<release>` and
/// its content tag); each host pulls the ones it lacks, checked by id.
async fn through_registry(
    builder: &Builder<'_>,
    fleet: &Fleet,
    registry: &str,
    built: &[Built],
    missing: &[Result<Vec<String>, String>],
    reporter: &dyn Reporter,
) -> Vec<Result<Vec<String>, String>> {
    let release = builder.record.release.as_str();
    let builder = builder.member;
    let refs: Vec<(String, String)> = built
        .iter()
        .flat_map(|b| {
            let content = format!(
                "sha-{}",
                b.id.trim_start_matches("sha256:").chars().take(12).collect::<String>()
            );
            [
                (b.id.clone(), reference(registry, &b.service, release)),
                (b.id.clone(), reference(registry, &b.service, &content)),
            ]
        })
        .collect();
    let pairs: Vec<(&str, &str)> = refs.iter().map(|(id, r)| (id.as_str(), r.as_str())).collect();
    let pushed = step(
        reporter,
        &builder.host.name,
        Step::Images,
        builder
            .remote
            .check(&release::push_images(&pairs).into(), Some(STEP_TIMEOUT)),
    )
    .await
    .map_err(|e| format!("push to {registry}: {e}"));
    if let Err(e) = pushed {
        return (0..fleet.members.len()).map(|_| Err(e.clone())).collect();
    }
    let refs = &refs;
    fleet
        .for_each_with(missing.iter().collect(), |m, missing| async move {
            let missing = missing.clone()?;
            if missing.is_empty() {
                return Ok(Vec::new());
            }
            // The release's reference of each image the host lacks (every
            // other one of `refs`; the content tags point at the same images).
            let pulls: Vec<(&str, &str)> = refs
                .iter()
                .step_by(2)
                .filter(|(id, _)| missing.contains(id))
                .map(|(id, r)| (r.as_str(), id.as_str()))
                .collect();
            step(
                reporter,
                &m.host.name,
                Step::Images,
                m.remote.check(&release::pull_images(&pulls).into(), Some(STEP_TIMEOUT)),
            )
            .await?;
            Ok(pulls.iter().map(|(r, _)| r.to_string()).collect())
        })
        .await
}

/// Saves each distinct set of lacking images once on the builder, then
/// streams it to every host that lacks that set.
async fn streamed(
    builder: &Builder<'_>,
    fleet: &Fleet,
    missing: &[Result<Vec<String>, String>],
    reporter: &dyn Reporter,
) -> Vec<Result<Vec<String>, String>> {
    let builder = builder.member;
    let mut sets: Vec<Vec<String>> = Vec::new();
    for ids in missing.iter().flatten() {
        let mut ids = ids.clone();
        ids.sort();
        if !ids.is_empty() && !sets.contains(&ids) {
            sets.push(ids);
        }
    }
    let mut saved: Vec<(Vec<String>, Result<Saved, String>)> = Vec::new();
    for ids in sets {
        let file = save(builder, &ids, reporter).await;
        saved.push((ids, file));
    }
    let saved = &saved;
    fleet
        .for_each_with(missing.iter().collect(), |m, missing| async move {
            let mut ids = missing.clone()?;
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            ids.sort();
            let (_, file) = saved
                .iter()
                .find(|(set, _)| *set == ids)
                .expect("a stream for every set");
            let (file, size) = file.as_ref().map_err(Clone::clone)?;
            step(
                reporter,
                &m.host.name,
                Step::Images,
                load(m, file.path(), *size, reporter),
            )
            .await?;
            Ok(Vec::new())
        })
        .await
}

/// `docker save` of `ids` on the builder, compressed there, into a local
/// temporary file: its size.
async fn save(builder: &Member, ids: &[String], reporter: &dyn Reporter) -> Result<Saved, String> {
    let file = tempfile::Builder::new()
        .prefix("deploy-images-")
        .tempfile()
        .map_err(|e| format!("cannot make a temporary file for the images: {e}"))?;
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let path = file.path().to_path_buf();
    let saving = async {
        let mut out = tokio::fs::File::create(&path).await.map_err(|e| e.to_string())?;
        builder
            .remote
            .check_to_writer(&release::save_images(&ids).into(), &mut out, Some(STEP_TIMEOUT))
            .await
            .map_err(|e| e.named("docker save").to_string())?;
        let size = tokio::fs::metadata(&path).await.map_err(|e| e.to_string())?.len();
        Ok::<u64, String>(size)
    };
    let size = step(reporter, &builder.host.name, Step::Images, saving).await?;
    Ok((file, size))
}

/// Streams the saved images at `path` (`size` bytes) into the host's `docker load`.
async fn load(m: &Member, path: &std::path::Path, size: u64, reporter: &dyn Reporter) -> Result<(), String> {
    let file = tokio::fs::File::open(path).await.map_err(|e| e.to_string())?;
    let mut counted = Counted {
        inner: file,
        sent: 0,
        total: size,
        host: m.host.name.clone(),
        told: Instant::now(),
        reporter,
    };
    m.remote
        .check_with_reader(&release::load_images().into(), &mut counted, Some(STEP_TIMEOUT))
        .await
        .map_err(|e| e.to_string())?;
    reporter.event(Event::Transfer {
        host: m.host.name.clone(),
        sent_bytes: size,
        total_bytes: size,
    });
    Ok(())
}

/// Names the delivered images for the host's release (as its build would
/// have), content-tags them, takes the registry's references `pulled` off,
/// and checks its override names the builder's ids.
async fn adopt(m: &Member, record: &Record, wanted: &[Built], pulled: &[String]) -> Result<(), String> {
    if wanted.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = wanted
        .iter()
        .map(|b| image_name(&record.project, &b.service, &record.release))
        .collect();
    let pairs: Vec<(&str, &str)> = wanted
        .iter()
        .zip(&names)
        .map(|(b, n)| (b.id.as_str(), n.as_str()))
        .collect();
    let mut script =
        Script::from(release::tag_images(&pairs)).then(release::address_images(&m.layout, &record.release));
    if !pulled.is_empty() {
        let refs: Vec<&str> = pulled.iter().map(String::as_str).collect();
        script = script.then(release::untag_images(&refs));
    }
    let script = script.then(release::image_ids(&m.layout, &record.release));
    let out = m
        .remote
        .check(&script, Some(QUICK_TIMEOUT))
        .await
        .map_err(|e| e.named("name the builder's images").to_string())?;
    let got: Vec<&str> = out.stdout.split_whitespace().collect();
    let expected: Vec<&str> = wanted.iter().map(|b| b.id.as_str()).collect();
    if got != expected {
        return Err(format!(
            "the release's images here are {} but the builder made {}: not switching",
            got.join(", "),
            expected.join(", ")
        ));
    }
    Ok(())
}

/// A reader that counts what passes and tells the reporter now and then.
struct Counted<'a, R> {
    inner: R,
    sent: u64,
    total: u64,
    host: String,
    told: Instant,
    reporter: &'a dyn Reporter,
}

impl<R: AsyncRead + Unpin> AsyncRead for Counted<'_, R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = (buf.filled().len() - before) as u64;
        self.sent += read;
        if read > 0 && self.told.elapsed() >= PROGRESS_EVERY {
            self.told = Instant::now();
            self.reporter.event(Event::Transfer {
                host: self.host.clone(),
                sent_bytes: self.sent,
                total_bytes: self.total,
            });
        }
        polled
    }
}
