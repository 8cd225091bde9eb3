"""The stat names memcached 1.6.18 prints, recorded from Debian's memcached on loopback.

Each group's names in memcached's order, so the unit tests can check
mbserver's groups without a memcached at hand; tests/integration compares
with a live memcached as well. ``ITEMS`` and ``SLABS`` are the per-class
suffixes (``items:<class>:<suffix>``, ``<class>:<suffix>``), ``SLABS_TOTALS``
the two fields after the classes, ``CONNECTION`` and ``LISTENER`` the
per-connection suffixes of `stats conns`.
"""

GENERAL = (
    "pid", "uptime", "time", "version", "libevent", "pointer_size", "rusage_user",
    "rusage_system", "max_connections", "curr_connections", "total_connections",
    "rejected_connections", "connection_structures", "response_obj_oom",
    "response_obj_count", "response_obj_bytes", "read_buf_count", "read_buf_bytes",
    "read_buf_bytes_free", "read_buf_oom", "reserved_fds", "cmd_get", "cmd_set",
    "cmd_flush", "cmd_touch", "cmd_meta", "get_hits", "get_misses", "get_expired",
    "get_flushed", "delete_misses", "delete_hits", "incr_misses", "incr_hits",
    "decr_misses", "decr_hits", "cas_misses", "cas_hits", "cas_badval", "touch_hits",
    "touch_misses", "store_too_large", "store_no_memory", "auth_cmds", "auth_errors",
    "bytes_read", "bytes_written", "limit_maxbytes", "accepting_conns",
    "listen_disabled_num", "time_in_listen_disabled_us", "threads", "conn_yields",
    "hash_power_level", "hash_bytes", "hash_is_expanding", "slab_reassign_rescues",
    "slab_reassign_chunk_rescues", "slab_reassign_evictions_nomem",
    "slab_reassign_inline_reclaim", "slab_reassign_busy_items",
    "slab_reassign_busy_deletes", "slab_reassign_running", "slabs_moved",
    "lru_crawler_running", "lru_crawler_starts", "lru_maintainer_juggles", "malloc_fails",
    "log_worker_dropped", "log_worker_written", "log_watcher_skipped", "log_watcher_sent",
    "log_watchers", "unexpected_napi_ids", "round_robin_fallback", "bytes", "curr_items",
    "total_items", "slab_global_page_pool", "expired_unfetched", "evicted_unfetched",
    "evicted_active", "evictions", "reclaimed", "crawler_reclaimed",
    "crawler_items_checked", "lrutail_reflocked", "moves_to_cold", "moves_to_warm",
    "moves_within_lru", "direct_reclaims", "lru_bumps_dropped",
)  # fmt: skip

SETTINGS = (
    "maxbytes", "maxconns", "tcpport", "udpport", "inter", "verbosity", "oldest",
    "evictions", "domain_socket", "umask", "shutdown_command", "growth_factor",
    "chunk_size", "num_threads", "num_threads_per_udp", "stat_key_prefix",
    "detail_enabled", "reqs_per_event", "cas_enabled", "tcp_backlog", "binding_protocol",
    "auth_enabled_sasl", "auth_enabled_ascii", "item_size_max", "maxconns_fast",
    "hashpower_init", "slab_reassign", "slab_automove", "slab_automove_ratio",
    "slab_automove_window", "slab_chunk_max", "lru_crawler", "lru_crawler_sleep",
    "lru_crawler_tocrawl", "tail_repair_time", "flush_enabled", "dump_enabled",
    "hash_algorithm", "lru_maintainer_thread", "lru_segmented", "hot_lru_pct",
    "warm_lru_pct", "hot_max_factor", "warm_max_factor", "temp_lru", "temporary_ttl",
    "idle_timeout", "watcher_logbuf_size", "worker_logbuf_size", "read_buf_mem_limit",
    "track_sizes", "inline_ascii_response", "ext_item_size", "ext_item_age", "ext_low_ttl",
    "ext_recache_rate", "ext_wbuf_size", "ext_compact_under", "ext_drop_under",
    "ext_max_sleep", "ext_max_frag", "slab_automove_freeratio", "ext_drop_unread",
    "ssl_enabled", "ssl_chain_cert", "ssl_key", "ssl_verify_mode", "ssl_keyformat",
    "ssl_ciphers", "ssl_ca_cert", "ssl_wbuf_size", "ssl_session_cache", "ssl_kernel_tls",
    "ssl_min_version", "num_napi_ids", "memory_file",
)  # fmt: skip

ITEMS = (
    "number", "number_hot", "number_warm", "number_cold", "age_hot", "age_warm", "age",
    "mem_requested", "evicted", "evicted_nonzero", "evicted_time", "outofmemory",
    "tailrepairs", "reclaimed", "expired_unfetched", "evicted_unfetched", "evicted_active",
    "crawler_reclaimed", "crawler_items_checked", "lrutail_reflocked", "moves_to_cold",
    "moves_to_warm", "moves_within_lru", "direct_reclaims", "hits_to_hot", "hits_to_warm",
    "hits_to_cold", "hits_to_temp",
)  # fmt: skip

SLABS = (
    "chunk_size", "chunks_per_page", "total_pages", "total_chunks", "used_chunks",
    "free_chunks", "free_chunks_end", "get_hits", "cmd_set", "delete_hits", "incr_hits",
    "decr_hits", "cas_hits", "cas_badval", "touch_hits",
)  # fmt: skip
SLABS_TOTALS = ("active_slabs", "total_malloced")

LISTENER = ("addr", "state", "secs_since_last_cmd")
CONNECTION = ("addr", "listen_addr", "state", "secs_since_last_cmd")

# Values that are not numbers (the rest are integers or decimals).
TEXT_VALUES = {
    "version", "libevent", "inter", "evictions", "domain_socket", "shutdown_command",
    "stat_key_prefix", "detail_enabled", "cas_enabled", "binding_protocol",
    "auth_enabled_sasl", "auth_enabled_ascii", "maxconns_fast", "slab_reassign",
    "lru_crawler", "flush_enabled", "dump_enabled", "hash_algorithm",
    "lru_maintainer_thread", "lru_segmented", "temp_lru", "track_sizes",
    "inline_ascii_response", "ext_drop_unread", "ssl_enabled", "ssl_chain_cert", "ssl_key",
    "ssl_ciphers", "ssl_ca_cert", "ssl_session_cache", "ssl_kernel_tls", "ssl_min_version",
    "num_napi_ids", "memory_file",
    "addr", "listen_addr", "state",  # stats conns
}  # fmt: skip
