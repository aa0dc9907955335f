//! Command-line arguments.

use std::path::PathBuf;

use crate::systems::Selection;

pub const USAGE: &str = "\
usage: shmstore-bench <all | w1 | w2 | w3 | w4 | w5 | w6>... [options]

Runs the workloads of WORKLOADS.md against shmstore and its peers and prints one table
(median, min and max over the runs; ratio of each median to shmstore's).

options:
  --runs N        runs of each workload (default 3; 1 with --smoke)
  --smoke         tiny sizes, one run: checks that everything still works (CI)
  --json PATH     where to write the results as JSON (default target/bench-results.json)
  --systems LIST  comma-separated subset of shmstore,typed,inline,huge,hashmap,lmdb,redis,python,limits
  --seed N        seed of the key orders and streams (default 1)
";

#[derive(Debug)]
pub struct Args {
    pub workloads: Vec<&'static str>,
    pub runs: usize,
    pub smoke: bool,
    pub json: PathBuf,
    pub selection: Selection,
    pub seed: u64,
}

pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut workloads = Vec::new();
    let mut runs = None;
    let mut smoke = false;
    let mut json = PathBuf::from("target/bench-results.json");
    let mut selection = Selection::all();
    let mut seed = 1;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "all" => workloads.extend(crate::workloads::ALL),
            "--runs" => {
                runs = Some(
                    value("--runs")?
                        .parse()
                        .map_err(|_| "--runs needs a whole number".to_owned())?,
                );
            }
            "--smoke" => smoke = true,
            "--json" => json = PathBuf::from(value("--json")?),
            "--systems" => selection = Selection::parse(&value("--systems")?)?,
            "--seed" => {
                seed = value("--seed")?
                    .parse()
                    .map_err(|_| "--seed needs a whole number".to_owned())?
            }
            "-h" | "--help" => return Err(String::new()),
            w => match crate::workloads::ALL
                .iter()
                .find(|id| **id == w.to_ascii_lowercase())
            {
                Some(id) => workloads.push(*id),
                None => return Err(format!("unknown argument {w:?}")),
            },
        }
    }
    if workloads.is_empty() {
        return Err("name the workloads to run, or `all`".to_owned());
    }
    workloads.sort_unstable();
    workloads.dedup();
    let runs = runs.unwrap_or(if smoke { 1 } else { 3 });
    if runs == 0 {
        return Err("--runs must be at least 1".to_owned());
    }
    Ok(Args {
        workloads,
        runs,
        smoke,
        json,
        selection,
        seed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Args, String> {
        parse(s.split_whitespace().map(String::from))
    }

    #[test]
    fn parses_workloads_and_options() {
        let a = p("w3 W1 --runs 5 --json x.json --systems shmstore,lmdb").unwrap();
        assert_eq!(a.workloads, ["w1", "w3"]);
        assert_eq!((a.runs, a.smoke), (5, false));
        assert_eq!(a.selection.systems.len(), 2);
        assert!(!a.selection.limits);
        let a = p("all --smoke").unwrap();
        assert_eq!((a.workloads.len(), a.runs), (6, 1));
        assert!(
            p("").is_err()
                && p("w7").is_err()
                && p("w1 --runs 0").is_err()
                && p("w1 --systems x").is_err()
        );
    }
}
