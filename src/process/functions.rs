//! In-agent functions: named code that StartProgram runs on a thread of the helper instead
//! of an OS process (govmomi's `process.NewFunc`), with the same pid, I/O, list and kill
//! semantics. The program name of the request selects the function; the arguments string is
//! its argument. Functions always get their standard streams as pipes, served through the
//! `/proc/<pid>/…` files like a program's.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;

/// Told when the function's process is killed. A function should return soon after.
#[derive(Clone, Debug)]
pub struct CancelToken {
    rx: watch::Receiver<bool>,
}

impl CancelToken {
    pub(crate) fn new() -> (watch::Sender<bool>, CancelToken) {
        let (tx, rx) = watch::channel(false);
        (tx, CancelToken { rx })
    }

    /// Whether a kill was asked for.
    pub fn is_cancelled(&self) -> bool {
        *self.rx.borrow()
    }

    /// Completes when a kill is asked for (for async functions).
    pub async fn cancelled(&mut self) {
        while !*self.rx.borrow_and_update() {
            if self.rx.changed().await.is_err() {
                // The manager dropped the record: nobody can kill any more; never complete.
                std::future::pending::<()>().await;
            }
        }
    }
}

/// What a running function gets.
#[derive(Debug)]
pub struct FunctionContext {
    /// The request's arguments string.
    pub arguments: String,
    /// The working directory the request asked for (or the user's home).
    pub working_dir: PathBuf,
    /// The environment a program would get.
    pub env: Vec<(String, String)>,
    /// Standard input: what the host writes to `/proc/<pid>/stdin`.
    pub stdin: File,
    /// Standard output: what the host reads from `/proc/<pid>/stdout`.
    pub stdout: File,
    /// Standard error.
    pub stderr: File,
    /// Set when the process is killed.
    pub cancel: CancelToken,
}

/// A function: returns its exit code.
pub type Function = Arc<dyn Fn(FunctionContext) -> i32 + Send + Sync>;

/// Functions by the program name that starts them.
#[derive(Clone, Default)]
pub struct FunctionRegistry {
    functions: HashMap<String, Function>,
}

impl fmt::Debug for FunctionRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&String> = self.functions.keys().collect();
        names.sort();
        f.debug_list().entries(names).finish()
    }
}

impl FunctionRegistry {
    /// No functions.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the function started by program name `name`. Names with a `/`
    /// are never looked up (those are paths of programs).
    pub fn with(
        mut self,
        name: &str,
        function: impl Fn(FunctionContext) -> i32 + Send + Sync + 'static,
    ) -> Self {
        self.functions.insert(name.to_string(), Arc::new(function));
        self
    }

    /// The function named `name`.
    pub fn get(&self, name: &str) -> Option<Function> {
        if name.contains('/') {
            return None;
        }
        self.functions.get(name).cloned()
    }

    /// Registered names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.functions.keys().cloned().collect();
        names.sort();
        names
    }
}
