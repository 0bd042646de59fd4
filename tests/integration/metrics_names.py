"""The metrics pgbun's Prometheus endpoint (metrics_listen_port) serves, by
name: what test_metrics.py checks a scrape against, and the only names
test_docker_static.py lets the Grafana dashboard use.

EXPORTER is the monitoring contract of prometheus-community's
pgbouncer_exporter 0.12, written from that exporter's collector.go (its
metricMaps, listsMap and configMap, the version and up descriptors, and the
stats_totals mapping with server_assignment_count of its pull requests #208
and #228), plus the SHOW CLIENTS count of the exporter's 0.12 contract;
not from pgbun's code.
The exporter builds a name as pgbouncer_<SHOW command>_<metric>, takes the
labels from text columns of the same row, and scales the stats_totals times
from microseconds to seconds.

PGBUN is what pgbun adds under its own prefix.
"""

# (metric, type, labels, SHOW command it comes from, column or list name, scale)
# The column is the one pgbun's SHOW output has; where PgBouncer's older name
# differs, the exporter's column name follows in the comment.
EXPORTER = [
    ("pgbouncer_up", "gauge", (), None, None, 1),
    ("pgbouncer_version_info", "gauge", ("version",), "VERSION", None, 1),
    # SHOW LISTS: one row per list, (list, items); the exporter maps the list name.
    ("pgbouncer_databases", "gauge", (), "LISTS", "databases", 1),
    ("pgbouncer_users", "gauge", (), "LISTS", "users", 1),
    ("pgbouncer_pools", "gauge", (), "LISTS", "pools", 1),
    ("pgbouncer_free_clients", "gauge", (), "LISTS", "free_clients", 1),
    ("pgbouncer_used_clients", "gauge", (), "LISTS", "used_clients", 1),
    ("pgbouncer_login_clients", "gauge", (), "LISTS", "login_clients", 1),
    ("pgbouncer_free_servers", "gauge", (), "LISTS", "free_servers", 1),
    ("pgbouncer_used_servers", "gauge", (), "LISTS", "used_servers", 1),
    ("pgbouncer_cached_dns_names", "gauge", (), "LISTS", "dns_names", 1),
    ("pgbouncer_cached_dns_zones", "gauge", (), "LISTS", "dns_zones", 1),
    ("pgbouncer_in_flight_dns_queries", "gauge", (), "LISTS", "dns_queries", 1),
    # SHOW CONFIG: one row per key, (key, value, default, changeable).
    ("pgbouncer_config_max_client_connections", "gauge", (), "CONFIG", "max_client_conn", 1),
    ("pgbouncer_config_max_user_connections", "gauge", (), "CONFIG", "max_user_connections", 1),
    # SHOW CLIENTS: the rows counted per (database, user, application_name, state).
    ("pgbouncer_client_connections", "gauge", ("database", "user", "application_name", "state"),
     "CLIENTS", None, 1),
]

DATABASES_LABELS = ("name", "host", "port", "database", "force_user", "pool_mode")
EXPORTER += [(f"pgbouncer_databases_{metric}", "gauge", DATABASES_LABELS, "DATABASES", column, 1)
             for metric, column in (
                 ("pool_size", "pool_size"),
                 ("reserve_pool", "reserve_pool_size"),  # PgBouncer before 1.24: reserve_pool
                 ("max_connections", "max_connections"),
                 ("current_connections", "current_connections"),
                 ("paused", "paused"),
                 ("disabled", "disabled"),
             )]

# The exporter also maps a column `requests` (queries_total), which no
# SHOW STATS_TOTALS has had since PgBouncer 1.8: it never appears.
EXPORTER += [(f"pgbouncer_stats_totals_{metric}", "counter", ("database",), "STATS_TOTALS", column, scale)
             for metric, column, scale in (
                 ("queries_pooled_total", "query_count", 1),
                 ("queries_duration_seconds_total", "query_time", 1e-6),
                 ("received_bytes_total", "bytes_received", 1),
                 ("sent_bytes_total", "bytes_sent", 1),
                 ("client_wait_seconds_total", "wait_time", 1e-6),
                 ("sql_transactions_pooled_total", "xact_count", 1),
                 ("server_in_transaction_seconds_total", "xact_time", 1e-6),
                 ("client_parses_total", "client_parse_count", 1),
                 ("server_parses_total", "server_parse_count", 1),
                 ("binds_total", "bind_count", 1),
                 ("server_assignments_total", "server_assignment_count", 1),
             )]

EXPORTER += [(f"pgbouncer_pools_{metric}", "gauge", ("database", "user"), "POOLS", column, 1)
             for metric, column in (
                 ("client_active_connections", "cl_active"),
                 ("client_active_cancel_connections", "cl_active_cancel_req"),
                 ("client_waiting_connections", "cl_waiting"),
                 ("client_waiting_cancel_connections", "cl_waiting_cancel_req"),
                 ("server_active_connections", "sv_active"),
                 ("server_active_cancel_connections", "sv_active_cancel"),
                 ("server_being_canceled_connections", "sv_being_canceled"),
                 ("server_idle_connections", "sv_idle"),
                 ("server_used_connections", "sv_used"),
                 ("server_testing_connections", "sv_tested"),
                 ("server_login_connections", "sv_login"),
                 ("client_maxwait_seconds", "maxwait"),
             )]

# Upper bounds (le, seconds) of every pgbun histogram, +Inf last.
BUCKETS = ("0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05",
           "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "30", "60", "+Inf")

# name: (type, labels)
PGBUN = {
    "pgbun_query_duration_seconds": ("histogram", ("database",)),
    "pgbun_transaction_duration_seconds": ("histogram", ("database",)),
    "pgbun_client_wait_seconds": ("histogram", ("database",)),
    "pgbun_pool_server_assignments_total": ("counter", ("database", "user")),
    "pgbun_pool_server_assignments_reused_total": ("counter", ("database", "user")),
    "pgbun_pool_reuse_ratio": ("gauge", ("database", "user")),
    "pgbun_pool_max_server_connections_used": ("gauge", ("database", "user")),
    "pgbun_server_connects_total": ("counter", ("database", "user")),
    "pgbun_prepared_statement_cache_hits_total": ("counter", ("database", "user")),
    "pgbun_prepared_statement_cache_misses_total": ("counter", ("database", "user")),
    "pgbun_session_state_replays_total": ("counter", ("database", "user")),
    "pgbun_session_state_pins_total": ("counter", ("database", "user")),
    "pgbun_tls_handshakes_total": ("counter", ("side",)),
    "pgbun_tls_handshake_failures_total": ("counter", ("side",)),
    "pgbun_auth_query_lookups_total": ("counter", ()),
    "pgbun_auth_query_lookup_failures_total": ("counter", ()),
    "pgbun_worker_busy_seconds_total": ("counter", ("worker",)),
    "pgbun_metrics_scrape_duration_seconds": ("gauge", ()),
    "pgbun_metrics_scrape_stopped_seconds": ("gauge", ()),
    "pgbun_metrics_scrapes_total": ("counter", ()),
}


def sample_names():
    """Every name a sample line of a scrape may carry (a histogram's as
    _bucket, _sum and _count)."""
    names = {m[0] for m in EXPORTER}
    for name, (kind, _) in PGBUN.items():
        if kind == "histogram":
            names |= {name + "_bucket", name + "_sum", name + "_count"}
        else:
            names.add(name)
    return names
