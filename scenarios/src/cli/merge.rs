//! `racelab merge`: the `run --json` lines of the jobs of a sharded sweep (`--shard K/N`,
//! one per machine of a CI matrix) combined into one race matrix, as one `run` over the whole
//! range would have printed it: counts add up, the first failing and stuck seeds are the
//! smallest, and each row's verdict is judged on the merged sweep. Overlapping seed ranges
//! (a shard given twice) are refused; gaps (a shard missing) are reported.

use std::collections::BTreeMap;
use std::io::Read;
use std::process::ExitCode;

use racelab_scenarios::{Expectation, Shard};
use serde_json::{Value, json};

/// One `run --json` line: a part of one race and variant's sweep.
#[derive(Clone, Debug)]
struct Part {
    /// Where it came from (`file:line`), for error messages.
    origin: String,
    /// Its seeds: `start..start + seeds_run`.
    start: u64,
    /// Seeds run.
    seeds_run: u64,
    /// Seeds that violated a property.
    failures: u64,
    /// The first of them.
    first_failing_seed: Option<u64>,
    /// Store operations over its seeds.
    store_ops: u64,
    /// Seeds that did not complete.
    stuck: u64,
    /// The first of them.
    first_stuck_seed: Option<u64>,
    /// Per `sometimes` property, the seeds in which it held.
    sometimes: BTreeMap<String, u64>,
    /// The expected verdict of the sweep.
    expected: Expectation,
    /// The command replaying its first failing seed.
    replay: Option<String>,
    /// Its scripted timelines (run by every shard; all must have matched).
    scripts: Vec<Value>,
    /// Which shard it was (`K/N`), if the line says.
    shard: Option<Shard>,
}

/// The merged sweep of one race and variant.
#[derive(Debug, Default)]
struct Merged {
    /// The parts, in the order read.
    parts: Vec<Part>,
}

/// Runs `racelab merge`.
pub(crate) fn merge(files: &[String], json: bool) -> ExitCode {
    let mut rows: Vec<((String, String), Merged)> = Vec::new();
    for file in files {
        let text = match read(file) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: cannot read {file}: {e}");
                return ExitCode::from(2);
            }
        };
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let origin = format!("{file}:{}", i + 1);
            let (key, part) = match parse(line, &origin) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("error: {origin}: {e}");
                    return ExitCode::from(2);
                }
            };
            match rows.iter_mut().find(|(k, _)| *k == key) {
                Some((_, merged)) => {
                    if let Err(e) = merged.add(part) {
                        eprintln!("error: {} {}: {e}", key.0, key.1);
                        return ExitCode::from(2);
                    }
                }
                None => rows.push((key, Merged { parts: vec![part] })),
            }
        }
    }
    if rows.is_empty() {
        eprintln!(
            "error: no `racelab run --json` lines in {}",
            files.join(", ")
        );
        return ExitCode::from(2);
    }
    let mut all_match = true;
    if !json {
        out!("race matrix (merged from {} file(s)):", files.len());
        out!(
            "{:<10} {:<8} {:>10} {:>8} {:>9}  verdict",
            "race",
            "variant",
            "failures",
            "seeds",
            "expected"
        );
    }
    for ((race, variant), merged) in &rows {
        let row = merged.row(race, variant);
        let missing = merged.missing_shards();
        let matches = row["verdict_matches"].as_bool().unwrap_or(false);
        all_match &= matches && missing.is_empty();
        if json {
            out!("{row}");
            continue;
        }
        out!(
            "{:<10} {:<8} {:>10} {:>8} {:>9}  {}",
            race,
            variant,
            row["failures"].as_u64().unwrap_or_default(),
            row["seeds_run"].as_u64().unwrap_or_default(),
            row["expected"].as_str().unwrap_or("?"),
            match (matches, missing.is_empty()) {
                (true, true) => "as expected",
                (true, false) => "INCOMPLETE",
                (false, _) => "MISMATCH",
            }
        );
        if !missing.is_empty() {
            out!(
                "  shard(s) {} not given: their seeds were not run",
                missing
                    .iter()
                    .map(Shard::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let ranges = merged.ranges();
        if ranges.len() > 1 {
            out!(
                "  seeds covered: {} (a gap: is a shard missing?)",
                ranges
                    .iter()
                    .map(|(a, b)| format!("{a}..{b}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if let Some(replay) = row["replay"].as_str() {
            out!(
                "  first failing seed {}; replay: {replay}",
                row["first_failing_seed"]
            );
        }
    }
    if all_match {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The text of `file`, or of standard input for `-`.
fn read(file: &str) -> std::io::Result<String> {
    if file == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        Ok(text)
    } else {
        std::fs::read_to_string(file)
    }
}

/// Reads one `run --json` line: its (race, variant) and its part of the sweep.
fn parse(line: &str, origin: &str) -> Result<((String, String), Part), String> {
    let v: Value =
        serde_json::from_str(line).map_err(|e| format!("not a `racelab run --json` line ({e})"))?;
    let text = |field: &str| -> Result<String, String> {
        v[field]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("the field `{field}` is missing or not text"))
    };
    let count = |field: &str| -> Result<u64, String> {
        v[field]
            .as_u64()
            .ok_or_else(|| format!("the field `{field}` is missing or not a whole number"))
    };
    let seed = |field: &str| -> Result<Option<u64>, String> {
        match &v[field] {
            Value::Null => Ok(None),
            x => x
                .as_u64()
                .map(Some)
                .ok_or_else(|| format!("the field `{field}` is not a seed")),
        }
    };
    let expected = match text("expected")?.as_str() {
        "fails" => Expectation::Fails,
        "holds" => Expectation::Holds,
        "stuck" => Expectation::Stuck,
        other => return Err(format!("unknown expected verdict {other:?}")),
    };
    let mut sometimes = BTreeMap::new();
    if let Some(map) = v["sometimes"].as_object() {
        for (name, n) in map {
            let n = n.as_u64().ok_or_else(|| {
                format!("the count of `sometimes` property {name} is not a number")
            })?;
            sometimes.insert(name.clone(), n);
        }
    }
    let part = Part {
        origin: origin.to_string(),
        start: count("start_seed")?,
        seeds_run: count("seeds_run")?,
        failures: count("failures")?,
        first_failing_seed: seed("first_failing_seed")?,
        store_ops: count("store_ops")?,
        stuck: count("stuck")?,
        first_stuck_seed: seed("first_stuck_seed")?,
        sometimes,
        expected,
        replay: v["replay"].as_str().map(str::to_string),
        scripts: v["scripts"].as_array().cloned().unwrap_or_default(),
        shard: match &v["shard"] {
            Value::Null => None,
            x => Some(
                x.as_str()
                    .unwrap_or_default()
                    .parse()
                    .map_err(|e: racelab_scenarios::BadShard| e.to_string())?,
            ),
        },
    };
    Ok(((text("race")?, text("variant")?), part))
}

impl Merged {
    /// Adds a part, refusing one whose seeds overlap a part already read or whose expected
    /// verdict differs (lines of different catalogs).
    fn add(&mut self, part: Part) -> Result<(), String> {
        let end = part.start.saturating_add(part.seeds_run);
        for other in &self.parts {
            let other_end = other.start.saturating_add(other.seeds_run);
            if part.start < other_end && other.start < end {
                return Err(format!(
                    "seeds {}..{end} ({}) overlap seeds {}..{other_end} ({}): the same shard \
                     given twice?",
                    part.start, part.origin, other.start, other.origin
                ));
            }
            if other.expected != part.expected {
                return Err(format!(
                    "{} expects {} but {} expects {}: lines from different catalogs",
                    part.origin,
                    part.expected.as_str(),
                    other.origin,
                    other.expected.as_str()
                ));
            }
        }
        self.parts.push(part);
        Ok(())
    }

    /// The shards of the sweep's split that no part came from (lines that name their
    /// shard, `K/N`, with the largest N read).
    fn missing_shards(&self) -> Vec<Shard> {
        let Some(of) = self
            .parts
            .iter()
            .filter_map(|p| p.shard)
            .map(|s| s.of)
            .max()
        else {
            return Vec::new();
        };
        (1..=of)
            .map(|index| Shard { index, of })
            .filter(|s| !self.parts.iter().any(|p| p.shard == Some(*s)))
            .collect()
    }

    /// The seed ranges covered, merged where consecutive, in order.
    fn ranges(&self) -> Vec<(u64, u64)> {
        let mut ranges: Vec<(u64, u64)> = self
            .parts
            .iter()
            .filter(|p| p.seeds_run > 0)
            .map(|p| (p.start, p.start.saturating_add(p.seeds_run)))
            .collect();
        ranges.sort_unstable();
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (a, b) in ranges {
            match out.last_mut() {
                Some(last) if last.1 == a => last.1 = b,
                _ => out.push((a, b)),
            }
        }
        out
    }

    /// The merged row, with the fields of a `run --json` line.
    fn row(&self, race: &str, variant: &str) -> Value {
        let sum = |f: fn(&Part) -> u64| self.parts.iter().map(f).sum::<u64>();
        let first = |f: fn(&Part) -> Option<u64>| self.parts.iter().filter_map(f).min();
        let failures = sum(|p| p.failures);
        let stuck = sum(|p| p.stuck);
        let first_failing = first(|p| p.first_failing_seed);
        let replay = self
            .parts
            .iter()
            .filter(|p| p.first_failing_seed.is_some() && p.first_failing_seed == first_failing)
            .find_map(|p| p.replay.clone());
        let mut sometimes: BTreeMap<&str, u64> = BTreeMap::new();
        for p in &self.parts {
            for (name, n) in &p.sometimes {
                *sometimes.entry(name).or_default() += n;
            }
        }
        let expected = self.parts[0].expected;
        let scripts_match = self.parts.iter().all(|p| {
            p.scripts
                .iter()
                .all(|s| s["matches"].as_bool().unwrap_or(false))
        });
        let observed = Expectation::observed(failures > 0, stuck > 0);
        let missing = self.missing_shards();
        json!({
            "race": race,
            "variant": variant,
            "shards": self.parts.len(),
            "seeds_run": sum(|p| p.seeds_run),
            "start_seed": self.parts.iter().map(|p| p.start).min(),
            "seed_ranges": self.ranges(),
            "missing_shards": missing.iter().map(Shard::to_string).collect::<Vec<_>>(),
            "failures": failures,
            "first_failing_seed": first_failing,
            "expected": expected.as_str(),
            "observed": observed.as_str(),
            "verdict_matches": expected.matches(observed) && scripts_match
                && missing.is_empty(),
            "store_ops": sum(|p| p.store_ops),
            "stuck": stuck,
            "first_stuck_seed": first(|p| p.first_stuck_seed),
            "sometimes": sometimes,
            "replay": replay,
            "scripts": self.parts[0].scripts,
        })
    }
}
