//! What the command phases send: a mix of creates, updates and deletes, each
//! worker owning the posts it created so every update and delete names the
//! exact version it expects (no ABORTED noise in the figures).

use rand::{rngs::StdRng, Rng};

/// Shares of the three commands, in percent.
#[derive(Clone, Copy, Debug)]
pub struct Mix {
    /// CreatePost share.
    pub create: u32,
    /// UpdatePost share.
    pub update: u32,
    /// DeletePost share.
    pub delete: u32,
}

impl std::str::FromStr for Mix {
    type Err = String;

    /// `create=40,update=50,delete=10` (any order; missing parts are 0).
    fn from_str(text: &str) -> Result<Self, String> {
        let mut mix = Mix {
            create: 0,
            update: 0,
            delete: 0,
        };
        for part in text.split(',').filter(|p| !p.trim().is_empty()) {
            let (name, value) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?}: expected name=percent"))?;
            let value: u32 = value.trim().parse().map_err(|e| format!("{part:?}: {e}"))?;
            match name.trim() {
                "create" => mix.create = value,
                "update" => mix.update = value,
                "delete" => mix.delete = value,
                other => return Err(format!("unknown command {other:?} (create, update, delete)")),
            }
        }
        if mix.create == 0 {
            return Err("the mix needs some creates (updates and deletes need posts)".into());
        }
        Ok(mix)
    }
}

impl std::fmt::Display for Mix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "create={},update={},delete={}",
            self.create, self.update, self.delete
        )
    }
}

/// The next command of a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Create a post.
    Create,
    /// Update the worker's post at this index.
    Update(usize),
    /// Delete the worker's post at this index.
    Delete(usize),
}

/// One worker's view: its live posts as (post_id, version).
#[derive(Debug, Default)]
pub struct Owned {
    /// Live posts.
    pub posts: Vec<(i64, i64)>,
}

impl Owned {
    /// Picks the next command by the mix; a create when there is nothing to change.
    pub fn next(&self, mix: Mix, rng: &mut StdRng) -> Op {
        let total = (mix.create + mix.update + mix.delete).max(1);
        let roll = rng.random_range(0..total);
        if self.posts.is_empty() || roll < mix.create {
            return Op::Create;
        }
        let index = rng.random_range(0..self.posts.len());
        if roll < mix.create + mix.update {
            Op::Update(index)
        } else {
            Op::Delete(index)
        }
    }

    /// Records the answer to `op`.
    pub fn done(&mut self, op: Op, post_id: i64, version: i64) {
        match op {
            Op::Create => self.posts.push((post_id, version)),
            Op::Update(index) => self.posts[index].1 = version,
            Op::Delete(index) => {
                self.posts.swap_remove(index);
            }
        }
    }
}

/// A title of realistic length.
pub fn title(worker: usize, seq: u64) -> String {
    format!("bench post {worker}-{seq}: a title of ordinary length")
}

/// Content of `bytes` bytes.
pub fn content(bytes: usize, seq: u64) -> String {
    let mut text = format!("content {seq} ");
    while text.len() < bytes {
        text.push_str("lorem ipsum dolor sit amet ");
    }
    text.truncate(bytes);
    text
}
