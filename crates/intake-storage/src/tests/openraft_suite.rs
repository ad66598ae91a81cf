//! openraft's own storage conformance suite over LogStore + StateMachine.

use openraft::testing::log::{StoreBuilder, Suite};
use tempfile::TempDir;

use super::fixtures::new_node;
use crate::{LogStore, NodeStorage, StateMachine, TypeConfig};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, (TempDir, NodeStorage)> for Builder {
    async fn build(
        &self,
    ) -> Result<((TempDir, NodeStorage), LogStore, StateMachine), openraft::StorageError<TypeConfig>> {
        // A fresh directory per test case; the TempDir lives as the guard.
        let (dir, node) = new_node();
        let log = node.log_store(0).unwrap();
        let sm = node.state_machine(0).unwrap();
        Ok(((dir, node), log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite() {
    Suite::test_all(Builder).await.unwrap();
}
