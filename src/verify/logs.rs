//! `type = "logs"`: a pattern that must be absent from (or present in) the named
//! services' log lines, since this release was started (just before its `up`)
//! when `since_deploy`.

use super::{excerpt, Attempt, Target};
use crate::config::CheckKind;
use crate::fleet::QUICK_TIMEOUT;
use crate::release::shell;

// $1 project, $2 the live release's started file ("" for all lines), $3... services (none: all).
const LOGS: &str = r#"
project="$1"; since=""
[ -n "$2" ] && since=$(cat "$2" 2>/dev/null)
shift 2
if [ $# -eq 0 ]; then set -- $(docker ps -a --filter "label=com.docker.compose.project=$project" --format '{{.Label "com.docker.compose.service"}}' | sort -u); fi
for s in "$@"; do
  for c in $(docker ps -aq --filter "label=com.docker.compose.project=$project" --filter "label=com.docker.compose.service=$s" --filter "label=com.docker.compose.oneoff=False"); do
    if [ -n "$since" ]; then docker logs --since "$since" "$c" 2>&1; else docker logs "$c" 2>&1; fi | while IFS= read -r line; do printf '%s | %s\n' "$s" "$line"; done
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
    let release = target.record.release.as_str();
    let current = if *since_deploy && !release.is_empty() {
        format!("{}/{}", m.layout.release(release), crate::release::STARTED_FILE)
    } else {
        String::new()
    };
    let mut args: Vec<&str> = vec![target.record.project.as_str(), current.as_str()];
    args.extend(services.iter().map(String::as_str));
    let out = m
        .remote
        .check(&shell(LOGS, &args).into(), Some(QUICK_TIMEOUT))
        .await
        .map_err(|e| e.to_string())?;
    let lines: Vec<&str> = out.stdout.lines().collect();
    if let Some(re) = absent {
        let hits: Vec<&&str> = lines.iter().filter(|l| re.is_match(l)).collect();
        if !hits.is_empty() {
            let shown: Vec<String> = hits.iter().take(3).map(|l| excerpt(l, 200)).collect();
            return Err(format!("{} line(s) match /{re}/: {}", hits.len(), shown.join(" / ")));
        }
    }
    if let Some(re) = present {
        match lines.iter().find(|l| re.is_match(l)) {
            Some(l) => return Ok(format!("found: {}", excerpt(l, 200))),
            None => return Err(format!("no line matches /{re}/ in {} line(s)", lines.len())),
        }
    }
    Ok(format!("no line of {} matches", lines.len()))
}
