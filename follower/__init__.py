"""logd-follower: replicates a primary's log (see the replication issue)."""
