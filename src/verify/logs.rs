//! `type = "logs"`: a pattern that must be absent from (or present in) the named
//! services' log lines, since this release was started (just before its `up`)
//! when `since_deploy`. Patterns see each line as the container wrote it (no
//! service prefix, no timestamp), so `^` and `$` anchor to the line itself.

use super::{excerpt, Attempt, Target};
use crate::config::CheckKind;
use crate::fleet::QUICK_TIMEOUT;
use crate::release::shell;

// $1 project, $2 the live release's started file ("" for all lines), $3... services
// (none: all). Prints `service<TAB>line` per line, a last line without newline too.
const LOGS: &str = r#"
project="$1"; since=""
[ -n "$2" ] && since=$(cat "$2" 2>/dev/null)
shift 2
if [ $# -eq 0 ]; then set -- $(docker ps -a --filter "label=com.docker.compose.project=$project" --format '{{.Label "com.docker.compose.service"}}' | sort -u); fi
for s in "$@"; do
  for c in $(docker ps -aq --filter "label=com.docker.compose.project=$project" --filter "label=com.docker.compose.service=$s" --filter "label=com.docker.compose.oneoff=False"); do
    if [ -n "$since" ]; then docker logs --since "$since" "$c" 2>&1; else docker logs "$c" 2>&1; fi | while IFS= read -r line || [ -n "$line" ]; do printf '%s\t%s\n' "$s" "$line"; done
  done
done
"#;

pub(crate) async fn attempt(kind: &CheckKind, target: &Target<'_>) -> Attempt {
    let CheckKind::Logs {
        services,
        since_deploy,
        absent,
        present,
    } = kind
    else {
        unreachable!("logs check");
    };
    let m = target.member;
    let mut services = services.clone();
    if let Some(runs) = &m.host.services {
        if services.is_empty() {
            services = runs.clone();
        } else {
            services.retain(|s| runs.contains(s));
        }
    }
    let swarm = target.record.engine == crate::config::Orchestrator::Swarm;
    let text = if swarm {
        // Every node's tasks, not only the manager's.
        let since = match since_deploy {
            true => target.started().await,
            false => None,
        };
        let cmd = crate::swarm::check_logs(&target.record.project, since, &services);
        m.remote
            .check(&cmd.into(), Some(QUICK_TIMEOUT))
            .await
            .map_err(|e| e.to_string())?
            .stdout
    } else {
        compose_lines(&services, *since_deploy, target).await?
    };
    judge(&text, absent.as_ref(), present.as_ref())
}

/// The services' lines of a compose project (`service<TAB>line`).
async fn compose_lines(services: &[String], since_deploy: bool, target: &Target<'_>) -> Result<String, String> {
    let m = target.member;
    let text = match through_engine(services, since_deploy, target).await {
        Some(text) => text,
        None => {
            let release = target.record.release.as_str();
            let current = if since_deploy && !release.is_empty() {
                format!("{}/{}", m.layout.release(release), crate::release::STARTED_FILE)
            } else {
                String::new()
            };
            let mut args: Vec<&str> = vec![target.record.project.as_str(), current.as_str()];
            args.extend(services.iter().map(String::as_str));
            m.remote
                .check(&shell(LOGS, &args).into(), Some(QUICK_TIMEOUT))
                .await
                .map_err(|e| e.to_string())?
                .stdout
        }
    };
    Ok(text)
}

/// The verdict of `absent` / `present` on `service<TAB>line` lines.
fn judge(text: &str, absent: Option<&regex::Regex>, present: Option<&regex::Regex>) -> Attempt {
    let lines = parse(text);
    let shown = |l: &LogLine| excerpt(&format!("{} | {}", l.service, l.text), 200);
    if let Some(re) = absent {
        let hits: Vec<&LogLine> = lines.iter().filter(|l| re.is_match(l.text)).collect();
        if !hits.is_empty() {
            let first: Vec<String> = hits.iter().take(3).map(|l| shown(l)).collect();
            return Err(format!("{} line(s) match /{re}/: {}", hits.len(), first.join(" / ")));
        }
    }
    if let Some(re) = present {
        match lines.iter().find(|l| re.is_match(l.text)) {
            Some(l) => return Ok(format!("found: {}", shown(l))),
            None => return Err(format!("no line matches /{re}/ in {} line(s)", lines.len())),
        }
    }
    Ok(format!("no line of {} matches", lines.len()))
}

/// The services' lines (`service<TAB>line`, as `LOGS` prints them) through
/// the Engine API; `None` when it cannot be used (the caller runs `LOGS`).
async fn through_engine(services: &[String], since_deploy: bool, target: &Target<'_>) -> Option<String> {
    let engine = target.member.engine(target.reporter).await?;
    let since = match since_deploy {
        true => target.started().await,
        false => None,
    };
    let containers = target.listed(engine).await.ok()?;
    let mut out = String::new();
    for c in containers
        .iter()
        .filter(|c| services.is_empty() || services.contains(&c.service))
    {
        for line in engine.logs(&c.name, since, None).await.ok()? {
            out.push_str(&format!("{}\t{line}\n", c.service));
        }
    }
    Some(out)
}

/// One log line: the service that wrote it and the line as it wrote it.
struct LogLine<'a> {
    service: &'a str,
    text: &'a str,
}

/// Reads `service<TAB>line` lines; a carriage return ending a line is not part of it.
fn parse(out: &str) -> Vec<LogLine<'_>> {
    out.lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(service, text)| LogLine {
            service,
            text: text.strip_suffix('\r').unwrap_or(text),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_see_the_line_as_the_container_wrote_it() {
        let lines = parse("worker\tRedis connection established\r\napi\tERROR boom\tand a tab\n");
        let re = regex::Regex::new("^Redis connection established$").unwrap();
        assert!(re.is_match(lines[0].text));
        assert_eq!(lines[1].service, "api");
        assert!(regex::Regex::new("^ERROR").unwrap().is_match(lines[1].text));
        assert_eq!(lines[1].text, "ERROR boom\tand a tab");
    }
}
