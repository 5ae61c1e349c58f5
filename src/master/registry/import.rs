//! Import staging: the chunks of an imported registry (`POST /registry/import`)
//! are collected apart from the registry and installed together with the last,
//! so a half-imported registry is never visible.

use std::sync::Arc;

use super::machine::RegistryMachine;
use super::model::{Operation, Registry};
use super::operations::{OperationError, Pending};

#[derive(Debug, Clone, PartialEq)]
pub(super) struct StagedImport {
    import: u64,
    next_index: u32,
    total: u32,
    registry: Registry,
}

impl RegistryMachine {
    pub(super) fn apply_operation(
        &mut self,
        position: u64,
        op: &Operation,
    ) -> Result<(), OperationError> {
        let Operation::ImportChunk {
            import,
            index,
            total,
            part,
        } = op
        else {
            return Arc::make_mut(&mut self.registry).apply_at(op, position);
        };
        self.registry.validate(op, &Pending::default())?;
        let mut staged = if *index == 0 {
            StagedImport {
                import: *import,
                next_index: 0,
                total: *total,
                registry: Registry::default(),
            }
        } else {
            match self.staged_import.take() {
                Some(staged)
                    if staged.import == *import
                        && staged.next_index == *index
                        && staged.total == *total =>
                {
                    staged
                }
                other => {
                    self.staged_import = other;
                    return Err(OperationError::ImportInterrupted {
                        import: *import,
                        index: *index,
                    });
                }
            }
        };
        merge_part(&mut staged.registry, part);
        staged.next_index += 1;
        if staged.next_index < staged.total {
            self.staged_import = Some(staged);
            return Ok(());
        }
        // The last chunk: install all of it at once, if the registry is still
        // empty (a write may have landed between the chunks).
        if self.registry.has_data() {
            return Err(OperationError::NotEmpty);
        }
        let registry = Arc::make_mut(&mut self.registry);
        let master = registry.master.take();
        *registry = Registry {
            master,
            sealed: None,
            ..staged.registry
        };
        self.staged_import = None;
        Ok(())
    }
}

/// Adds one import chunk's part to the registry being staged. Chunks hold disjoint
/// parts (see `transfer::import_chunks`), so nothing is overwritten.
fn merge_part(into: &mut Registry, part: &Registry) {
    let part = part.clone();
    into.agents.extend(part.agents);
    into.unreachable.extend(part.unreachable);
    into.gone.extend(part.gone);
    into.schedule.windows.extend(part.schedule.windows);
    into.quotas.extend(part.quotas);
    into.weights.extend(part.weights);
}
