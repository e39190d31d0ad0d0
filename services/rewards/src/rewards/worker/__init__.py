"""The rewards worker: turns attribution decisions into rewards and approves them when due."""
