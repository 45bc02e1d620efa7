"""Prometheus metrics of the polling engine, in a registry of their own (one per engine)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class EngineMetrics:
    """Counters and gauges the engine updates; ``serve`` exposes them on ``/metrics``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.reads = Counter("headend_reads", "Successful meter jobs", ["channel", "kind"], registry=r)
        self.failures = Counter(
            "headend_read_failures", "Failed meter jobs", ["channel", "kind", "reason"], registry=r
        )
        self.offline_jobs = Counter(
            "headend_offline_jobs",
            "Meter jobs not run: the channel's dial-in device had no live connection",
            ["channel", "kind"],
            registry=r,
        )
        self.channel_offline = Gauge(
            "headend_channel_offline",
            "1 while a dial-in channel has no live connection",
            ["channel"],
            registry=r,
        )
        self.unverified_jobs = Counter(
            "headend_unverified_jobs",
            "Meter jobs run on a dial-in connection nothing verified (their readings stored as suspect)",
            ["channel", "kind"],
            registry=r,
        )
        self.dialin = Gauge(
            "headend_dialin_events", "Dial-in front end events since start, by kind", ["event"], registry=r
        )
        self.timeouts = Counter("headend_timeouts", "Meter jobs that timed out", ["channel"], registry=r)
        self.line_events = Counter(
            "headend_line_events",
            "Bad replies per bus: checksum errors, noise bytes, unexpected frames, refusals",
            ["channel", "kind"],
            registry=r,
        )
        self.went_back = Counter(
            "headend_registers_went_back",
            "Energy registers read below their last accepted value and not stored (kept as events)",
            ["channel"],
            registry=r,
        )
        self.readings = Counter(
            "headend_readings_stored", "Readings acknowledged by the writer", ["quality"], registry=r
        )
        self.job_seconds = Histogram(
            "headend_job_seconds",
            "Bus time per meter job",
            ["kind"],
            registry=r,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
        )
        self.utilisation = Gauge(
            "headend_bus_utilisation", "Bus busy time of the last cycle / interval", ["channel"], registry=r
        )
        self.queue_depth = Gauge("headend_queue_depth", "Jobs waiting per channel", ["channel"], registry=r)
        self.success_rate = Gauge(
            "headend_cycle_success_ratio", "Read success rate of the last cycle", ["channel"], registry=r
        )
        self.overall_success = Gauge(
            "headend_cycle_success_ratio_overall", "Read success rate of the last cycle", registry=r
        )
        self.quarantined = Gauge("headend_meters_quarantined", "Meters in quarantine", registry=r)
        self.inventory_refused = Gauge(
            "headend_inventory_refused",
            "Stored channels and meters the daemon does not poll (logged)",
            registry=r,
        )
        self.writer_lag = Gauge(
            "headend_writer_lag_seconds", "Age of the oldest unwritten reading", registry=r
        )
        self.writer_pending = Gauge("headend_writer_pending", "Readings not yet durable", registry=r)
        self.spool_bytes = Gauge("headend_spool_bytes", "Bytes held in the on-disk spool", registry=r)
        self.spool_full = Gauge(
            "headend_spool_full", "1 while the spool's disk (or size bound) refuses writes", registry=r
        )
        self.spool_held = Gauge(
            "headend_spool_held_readings", "Readings held in memory while the spool is full", registry=r
        )
        self.spool_quarantined = Gauge(
            "headend_spool_quarantined", "Damaged spool stretches set aside since start", registry=r
        )
        self.capacity_warnings = Counter(
            "headend_capacity_warnings", "Cycles a bus could not finish in time", ["channel"], registry=r
        )
        self.clock_corrections = Counter("headend_clock_corrections", "Meter clocks set", registry=r)
        self.concentrator_archive_mismatch = Gauge(
            "headend_concentrator_archive_mismatch",
            "1 while a concentrator's meter archive disagrees with the inventory",
            ["channel"],
            registry=r,
        )
        self.archive_requests = Counter(
            "headend_archive_requests",
            "Archive requests the daemon finished, by their final state (done, failed, expired)",
            ["state"],
            registry=r,
        )
        self.meter_requests = Counter(
            "headend_meter_requests",
            "Meter requests (on-demand reads, re-collections) the daemon finished, by kind and final state",
            ["kind", "state"],
            registry=r,
        )
        self.concentrator_events = Counter(
            "headend_concentrator_events", "Concentrator event records stored", ["channel"], registry=r
        )
        self.fee_control_halted = Gauge(
            "headend_fee_control_halted", "1 while a cap halts automatic disconnection", registry=r
        )
        self.failed_passes = Counter(
            "headend_service_pass_failures",
            "Billing or fee-control passes that failed",
            ["service"],
            registry=r,
        )
        self.exceptions = Gauge(
            "headend_exceptions",
            "Exceptions by rule and state (after the latest rules pass)",
            ["rule", "state"],
            registry=r,
        )
        self.exception_passes = Counter(
            "headend_exception_passes",
            "Exception rules passes after read cycles, by outcome",
            ["outcome"],
            registry=r,
        )
        self.fee_control_failures = Counter(
            "headend_fee_control_item_failures",
            "Accounts or meters a fee-control pass could not handle (isolated, the pass went on)",
            ["stage"],
            registry=r,
        )
        self.commands_stuck = Gauge(
            "headend_commands_pending_too_long",
            "Open relay commands older than [safety] pending_alarm",
            registry=r,
        )
        self.billing_holds = Gauge(
            "headend_billing_holds", "Registers held for unresolved suspect data", registry=r
        )
        self.relay_mismatches = Gauge(
            "headend_relay_mismatches", "Relays found in another state than the command log says", registry=r
        )
        self.campaign_meters = Gauge(
            "headend_campaign_meters",
            "Meters of running or paused parameter campaigns, by state",
            ["campaign", "state"],
            registry=r,
        )

        self.cluster_channels = Gauge(
            "headend_cluster_channels",
            "Channel leases this cluster member holds ([cluster] enabled)",
            ["daemon"],
            registry=r,
        )
        self.cluster_elected = Gauge(
            "headend_cluster_elected",
            "1 while this cluster member holds the services' lease (billing, VEE, fee control, upkeep)",
            ["daemon"],
            registry=r,
        )
        self.cluster_renew_failures = Counter(
            "headend_cluster_renew_failures",
            "Lease renewals that did not reach the database",
            ["daemon"],
            registry=r,
        )
        self.cluster_moves = Counter(
            "headend_cluster_moves",
            "Channel leases this member took or let go, by direction (taken, released, seized, lost)",
            ["daemon", "direction"],
            registry=r,
        )
        self.daemon_active = Gauge(
            "headend_daemon_active",
            "1 while this daemon polls its buses (it holds the database lock, or rides out an outage alone)",
            registry=r,
        )

    def serve(self, host: str, port: int) -> None:
        """Start the ``/metrics`` HTTP endpoint in a background thread."""
        start_http_server(port, addr=host, registry=self.registry)
