//! `cgbot models`: the model catalogue.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Subcommand;
use serde::Serialize;

use cgbot::models::{self, Catalogue};

#[derive(Subcommand)]
pub enum ModelsCommand {
    /// List known models and whether their files are present.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Check model files against their recorded sha256 (all models by default).
    Verify { names: Vec<String> },
}

impl ModelsCommand {
    pub fn run(&self) -> Result<()> {
        match self {
            ModelsCommand::List { json } => models_list(*json),
            ModelsCommand::Verify { names } => models_verify(names),
        }
    }
}

#[derive(Serialize)]
struct ModelRow<'a> {
    #[serde(flatten)]
    spec: &'a models::ModelSpec,
    path: Option<PathBuf>,
}

fn models_list(json: bool) -> Result<()> {
    let catalogue = Catalogue::load(None)?;
    let rows: Vec<ModelRow> = catalogue
        .models()
        .iter()
        .map(|spec| ModelRow {
            spec,
            path: catalogue.find_file(spec),
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    for row in &rows {
        let s = row.spec;
        println!(
            "{}{}  {:?} {}x{} {:?}, {} labels, {}\n    {}\n    file: {}",
            s.name,
            if s.default { " (default)" } else { "" },
            s.format,
            s.input.width,
            s.input.height,
            s.input.colour,
            s.labels.len(),
            s.license.as_deref().unwrap_or("license not recorded"),
            s.description.as_deref().unwrap_or(""),
            row.path.as_ref().map_or_else(
                || format!("{} missing (run `make setup`)", s.file),
                |p| p.display().to_string()
            ),
        );
    }
    Ok(())
}

fn models_verify(names: &[String]) -> Result<()> {
    let catalogue = Catalogue::load(None)?;
    let specs: Vec<_> = if names.is_empty() {
        catalogue.models().iter().collect()
    } else {
        names
            .iter()
            .map(|n| catalogue.get(n))
            .collect::<Result<_, _>>()?
    };
    let mut failed = 0;
    for spec in specs {
        // A model made locally is optional unless named.
        let found = if names.is_empty() {
            catalogue.locate_if_made(spec)
        } else {
            catalogue.locate(spec).map(Some)
        };
        match found {
            Ok(Some(found)) => println!("ok      {}  {}", spec.name, found.path.display()),
            Ok(None) => println!(
                "absent  {}  made locally: run `{}`",
                spec.name,
                spec.recipe.as_deref().unwrap_or_default()
            ),
            Err(e) => {
                failed += 1;
                println!("FAILED  {}  {e}", spec.name);
            }
        }
    }
    if failed > 0 {
        bail!("{failed} model(s) failed verification");
    }
    Ok(())
}
