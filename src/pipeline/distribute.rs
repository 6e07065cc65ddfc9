//! `[build] on = "first"` or `"local"`: one place builds the release, every
//! other host receives its images, so every host runs the very same image
//! ids. Through a registry (`[build] registry`: the builder pushes, the hosts
//! pull, each pulled image's id compared with the built one) or, without one,
//! streamed over SSH: `docker save` of only the images a host lacks,
//! compressed on the builder, into that host's `docker load` (an image loads
//! under its own id). A host whose engine runs another platform than the
//! images' is refused. Each host names the images for its release as its own
//! build would have, all before any host switches.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, ReadBuf};

use super::up::pid_file;
use crate::activation::Record;
use crate::compose::image_name;
use crate::config::Config;
use crate::fleet::{step, Fleet, Member, QUICK_TIMEOUT};
use crate::release;
use crate::remote::Script;
use crate::report::events::{Event, Reporter, Step};

/// A push, a pull, a save or a load of images may take long (they are as big
/// as the images), but not forever.
pub(super) const TRANSFER_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// How often a stream's progress is told.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// A built image: its service, its id (`sha256:...`) and platform (`linux/amd64`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Built {
    pub service: String,
    pub id: String,
    pub platform: String,
}

/// Images saved on the builder, compressed, in a local file: it and its size.
type Saved = (tempfile::NamedTempFile, u64);

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

/// One host's part: the builder's images of the services it builds, and the
/// ids of those its engine lacks.
struct Need<'a> {
    record: &'a Record,
    wanted: Vec<Built>,
    missing: Vec<String>,
}

impl Need<'_> {
    /// (id, the name its release gives it) of each wanted image.
    fn names(&self) -> Vec<(String, String)> {
        self.wanted
            .iter()
            .map(|b| {
                (
                    b.id.clone(),
                    image_name(&self.record.project, &b.service, &self.record.release),
                )
            })
            .collect()
    }

    fn lacking(&self) -> impl Iterator<Item = &Built> {
        self.wanted.iter().filter(|b| self.missing.contains(&b.id))
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
    let needs = needs(builder, fleet, records, &built).await;
    if needs.iter().any(Result::is_err) {
        // Nothing moves when one host cannot take the images.
        return needs
            .into_iter()
            .map(|n| match n {
                Err(e) => Err(e),
                Ok(_) => Err("not sent: another host cannot take the images".to_string()),
            })
            .collect();
    }
    tell(builder, fleet, &needs, config.build.registry.as_deref(), reporter);
    let any = needs.iter().any(|n| matches!(n, Ok(Some(n)) if !n.missing.is_empty()));
    let delivered: Vec<Result<(), String>> = match (&config.build.registry, any) {
        (_, false) => needs
            .iter()
            .map(|n| n.as_ref().map(|_| ()).map_err(Clone::clone))
            .collect(),
        (Some(registry), true) => {
            let auth = config.build.credentials.is_some();
            through_registry(builder, fleet, (registry, auth), &built, &needs, reporter).await
        }
        (None, true) => streamed(builder, fleet, &needs, reporter).await,
    };
    fleet
        .for_each_with(
            needs.iter().zip(delivered).collect(),
            |m, (need, delivered)| async move {
                delivered?;
                match need {
                    Ok(Some(need)) => adopt(m, need).await,
                    Ok(None) => Ok(()),
                    Err(e) => Err(e.clone()),
                }
            },
        )
        .await
}

/// The images release `record` names on the builder, by service.
async fn built_images(builder: &Member, record: &Record) -> Result<Vec<Built>, String> {
    let out = builder
        .remote
        .check(
            &release::image_ids(&builder.layout, &record.release).into(),
            Some(QUICK_TIMEOUT),
        )
        .await
        .map_err(|e| e.to_string())?;
    let lines: Vec<(&str, &str)> = out.stdout.lines().filter_map(|l| l.trim().split_once(' ')).collect();
    if lines.len() != record.build.len() {
        return Err(format!(
            "the release names {} images for {} built services",
            lines.len(),
            record.build.len()
        ));
    }
    Ok(record
        .build
        .iter()
        .zip(lines)
        .map(|(service, (id, platform))| Built {
            service: service.clone(),
            id: id.to_string(),
            platform: platform.to_string(),
        })
        .collect())
}

/// Per host: what it needs (`None` for the builder and hosts that build
/// nothing), after asking its engine what it lacks and what platform it runs.
async fn needs<'a>(
    builder: &Builder<'_>,
    fleet: &Fleet,
    records: &'a [Record],
    built: &[Built],
) -> Vec<Result<Option<Need<'a>>, String>> {
    fleet
        .for_each_with(records.iter().collect(), |m, record| async move {
            let wanted: Vec<Built> = record
                .build
                .iter()
                .filter_map(|s| built.iter().find(|b| &b.service == s).cloned())
                .collect();
            if builder.is(m) || wanted.is_empty() {
                return Ok(None);
            }
            let ids: Vec<&str> = wanted.iter().map(|b| b.id.as_str()).collect();
            let out = m
                .remote
                .check(&release::missing_images(&ids).into(), Some(QUICK_TIMEOUT))
                .await
                .map_err(|e| e.to_string())?;
            let mut lines = out.stdout.split_whitespace();
            let platform = lines.next().unwrap_or_default();
            if let Some(b) = wanted.iter().find(|b| b.platform != platform) {
                return Err(format!(
                    "this host's engine runs {platform} images, the build made {} for {}: build on the hosts, or where the platform is theirs",
                    b.platform, b.service
                ));
            }
            let mut missing: Vec<String> = lines.map(str::to_string).collect();
            missing.sort();
            missing.dedup();
            Ok(Some(Need {
                record,
                wanted,
                missing,
            }))
        })
        .await
}

/// Says, per host, which of the builder's images it lacks and how they come.
fn tell(
    builder: &Builder<'_>,
    fleet: &Fleet,
    needs: &[Result<Option<Need<'_>>, String>],
    registry: Option<&str>,
    reporter: &dyn Reporter,
) {
    for (m, need) in fleet.members.iter().zip(needs) {
        let Ok(Some(need)) = need else { continue };
        if builder.is(m) {
            continue;
        }
        let services: Vec<&str> = need.lacking().map(|b| b.service.as_str()).collect();
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

/// The registry reference of a service's image under `tag`.
fn reference(registry: &str, service: &str, tag: &str) -> String {
    format!("{registry}/{}:{tag}", service.to_lowercase())
}

/// The builder pushes every built image (`<registry>/<service>:<release>` and
/// its content tag); each host pulls the ones it lacks, checked by id and
/// named for its release in the same command.
async fn through_registry(
    builder: &Builder<'_>,
    fleet: &Fleet,
    (registry, auth): (&str, bool),
    built: &[Built],
    needs: &[Result<Option<Need<'_>>, String>],
    reporter: &dyn Reporter,
) -> Vec<Result<(), String>> {
    let release = builder.record.release.as_str();
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
    let m = builder.member;
    let push = release::with_registry_auth(release::push_images(&pairs), &m.layout, release, auth);
    let push = release::tracked(&push, &pid_file(m, release));
    let pushed = step(
        reporter,
        &m.host.name,
        Step::Images,
        m.remote.check(&push.into(), Some(TRANSFER_TIMEOUT)),
    )
    .await
    .map_err(|e| format!("push to {registry}: {e}"));
    if let Err(e) = pushed {
        return fleet.members.iter().map(|_| Err(e.clone())).collect();
    }
    fleet
        .for_each_with(needs.iter().collect(), |m, need| async move {
            let need = match need {
                Ok(Some(need)) if !need.missing.is_empty() => need,
                Ok(_) => return Ok(()),
                Err(e) => return Err(e.clone()),
            };
            let triples: Vec<(String, String, String)> = need
                .lacking()
                .map(|b| {
                    (
                        reference(registry, &b.service, release),
                        b.id.clone(),
                        image_name(&need.record.project, &b.service, release),
                    )
                })
                .collect();
            let triples: Vec<(&str, &str, &str)> = triples
                .iter()
                .map(|(r, id, n)| (r.as_str(), id.as_str(), n.as_str()))
                .collect();
            let pull = release::with_registry_auth(release::pull_images(&triples), &m.layout, release, auth);
            let pull = release::tracked(&pull, &pid_file(m, release));
            step(
                reporter,
                &m.host.name,
                Step::Images,
                m.remote.check(&pull.into(), Some(TRANSFER_TIMEOUT)),
            )
            .await
            .map(|_| ())
        })
        .await
}

/// Saves each distinct set of lacking images once on the builder, then
/// streams it to every host that lacks that set; each host names the
/// images for its release as soon as they are loaded.
async fn streamed(
    builder: &Builder<'_>,
    fleet: &Fleet,
    needs: &[Result<Option<Need<'_>>, String>],
    reporter: &dyn Reporter,
) -> Vec<Result<(), String>> {
    let mut sets: Vec<&[String]> = Vec::new();
    for need in needs.iter().flatten().flatten() {
        if !need.missing.is_empty() && !sets.contains(&need.missing.as_slice()) {
            sets.push(&need.missing);
        }
    }
    let mut saved: Vec<(&[String], Result<Saved, String>)> = Vec::new();
    for ids in sets {
        saved.push((ids, save(builder, ids, reporter).await));
    }
    let saved = &saved;
    fleet
        .for_each_with(needs.iter().collect(), |m, need| async move {
            let need = match need {
                Ok(Some(need)) if !need.missing.is_empty() => need,
                Ok(_) => return Ok(()),
                Err(e) => return Err(e.clone()),
            };
            let (_, file) = saved
                .iter()
                .find(|(set, _)| *set == need.missing.as_slice())
                .expect("a stream for every set");
            let (file, size) = file.as_ref().map_err(Clone::clone)?;
            step(
                reporter,
                &m.host.name,
                Step::Images,
                load(m, need, file.path(), *size, reporter),
            )
            .await
        })
        .await
}

/// `docker save` of `ids` on the builder, compressed there, into a local
/// temporary file: its size.
async fn save(builder: &Builder<'_>, ids: &[String], reporter: &dyn Reporter) -> Result<Saved, String> {
    let m = builder.member;
    let file = tempfile::Builder::new()
        .prefix("deploy-images-")
        .tempfile()
        .map_err(|e| format!("cannot make a temporary file for the images: {e}"))?;
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let saving = async {
        let mut out = tokio::fs::File::from_std(file.reopen().map_err(|e| e.to_string())?);
        let save = release::tracked(&release::save_images(&ids), &pid_file(m, &builder.record.release));
        m.remote
            .check_to_writer(&save.into(), &mut out, Some(TRANSFER_TIMEOUT))
            .await
            .map_err(|e| e.named("docker save").to_string())?;
        let size = tokio::fs::metadata(file.path()).await.map_err(|e| e.to_string())?.len();
        Ok::<u64, String>(size)
    };
    let size = step(reporter, &m.host.name, Step::Images, saving).await?;
    Ok((file, size))
}

/// Streams the saved images at `path` (`size` bytes) into the host's
/// `docker load`, then names them for its release.
async fn load(
    m: &Member,
    need: &Need<'_>,
    path: &std::path::Path,
    size: u64,
    reporter: &dyn Reporter,
) -> Result<(), String> {
    let file = tokio::fs::File::open(path).await.map_err(|e| e.to_string())?;
    let mut counted = Counted {
        inner: file,
        sent: 0,
        total: size,
        host: m.host.name.clone(),
        told: Instant::now(),
        reporter,
    };
    let names = need.names();
    let pairs: Vec<(&str, &str)> = names.iter().map(|(id, n)| (id.as_str(), n.as_str())).collect();
    let script = Script::from(release::tracked(
        &release::load_images(),
        &pid_file(m, &need.record.release),
    ))
    .then(release::tag_images(&pairs));
    m.remote
        .check_with_reader(&script, &mut counted, Some(TRANSFER_TIMEOUT))
        .await
        .map_err(|e| e.named("docker load").to_string())?;
    reporter.event(Event::Transfer {
        host: m.host.name.clone(),
        sent_bytes: counted.sent,
        total_bytes: size,
    });
    Ok(())
}

/// Names the builder's images for the host's release (as its build would
/// have: by id, so the very images), content-tags them, and reads back which
/// ids the release's override now names: the builder's, or no switch.
async fn adopt(m: &Member, need: &Need<'_>) -> Result<(), String> {
    let names = need.names();
    let pairs: Vec<(&str, &str)> = names.iter().map(|(id, n)| (id.as_str(), n.as_str())).collect();
    let release = need.record.release.as_str();
    let script = Script::from(release::tag_images(&pairs))
        .then(release::address_images(&m.layout, release))
        .then(release::image_ids(&m.layout, release));
    let out = m
        .remote
        .check(&script, Some(QUICK_TIMEOUT))
        .await
        .map_err(|e| e.named("name the builder's images").to_string())?;
    let got: Vec<&str> = out.stdout.lines().filter_map(|l| l.split_whitespace().next()).collect();
    let expected: Vec<&str> = need.wanted.iter().map(|b| b.id.as_str()).collect();
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
