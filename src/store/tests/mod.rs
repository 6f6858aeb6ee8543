//! Store tests.
//!
//! `conformance` holds the behaviour every [`Store`](super::Store) must have; the macro below
//! runs each of its functions twice, as `store::tests::sqlite::<name>` on a fresh SQLite file
//! and as `store::tests::postgres::<name>` in a fresh schema of the real PostgreSQL server.
//! `backends` covers what is specific to one backend (URLs, files, schemas).

mod backends;
mod conformance;
mod delivery_leases;
mod egress;
mod event_log;
mod fixtures;
pub(crate) mod harness;
mod leases;
mod nodes;
mod reconcile;
mod records_misc;
mod recovery;
mod rooms_api;
mod session_participants;
mod sessions;
mod upgrades;

/// Generates one test per backend for every listed conformance function (`module::name`;
/// names are unique across modules).
macro_rules! conformance_suite {
    ($($module:ident :: $test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::harness::run_sqlite(super::$module::$test).await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::harness::run_postgres(super::$module::$test).await;
                }
            )*
        }
    };
}

conformance_suite!(
    conformance::health_answers,
    conformance::room_started_inserts_an_active_room,
    conformance::room_started_is_idempotent,
    conformance::room_started_keeps_name_and_metadata_when_absent,
    conformance::room_status_transitions,
    conformance::room_finished_twice_keeps_the_first_close,
    conformance::room_finished_of_unknown_room_is_not_found,
    conformance::get_room_of_unknown_room_is_not_found,
    conformance::list_rooms_filters_by_status_and_orders_by_creation,
    conformance::participant_join_and_leave_round_trip,
    conformance::rejoin_with_same_identity_keeps_both_rows,
    conformance::list_participants_orders_by_joined_at,
    conformance::list_participants_of_unknown_or_empty_room,
    conformance::participant_left_of_unknown_sid_is_not_found,
    conformance::second_leave_keeps_the_first,
    conformance::join_to_unknown_room_is_not_found,
    conformance::join_retry_is_idempotent_and_sid_clash_is_a_conflict,
    conformance::joins_and_leaves_bump_room_last_active_at,
    conformance::timestamps_are_truncated_to_milliseconds,
    conformance::left_at_before_joined_at_is_clamped,
    conformance::counters_saturate_at_i64_max,
    conformance::concurrent_joins_and_leaves_are_all_recorded,
    conformance::get_participant_of_unknown_sid_is_not_found,
    sessions::create_session_records_it_with_an_event,
    sessions::create_session_refuses_unknown_closed_and_busy_rooms,
    sessions::one_open_session_per_room_even_when_created_concurrently,
    sessions::transition_is_a_compare_and_set,
    sessions::finished_sessions_get_ended_at,
    sessions::concurrent_transitions_from_one_state_have_one_winner,
    sessions::session_reads_of_unknown_rooms_and_sessions,
    sessions::create_session_attaches_open_connections,
    session_participants::rejoin_updates_the_session_participant,
    session_participants::late_leave_of_a_replaced_connection_keeps_the_person_present,
    session_participants::join_checks_the_session,
    session_participants::joins_and_leaves_write_events,
    session_participants::list_session_participants_orders_and_checks,
    session_participants::open_connections_lists_who_is_still_here,
    session_participants::tracks_are_recorded_as_events,
    event_log::every_change_appends_its_events,
    event_log::failed_changes_append_nothing,
    event_log::concurrent_writers_get_gapless_seqs,
    event_log::list_events_replays_after_a_seq,
    event_log::events_after_pages_across_rooms,
    event_log::delivery_cursors_are_kept_per_sink,
    egress::egress_lifecycle,
    egress::failed_egress_keeps_its_error,
    egress::create_egress_checks_room_session_and_id,
    egress::list_egress_filters_newest_first,
    rooms_api::create_room_creates_returns_and_reopens,
    rooms_api::room_started_records_only_changes,
    rooms_api::update_room_changes_only_given_fields,
    rooms_api::room_finished_ends_the_session_and_connections,
    rooms_api::idle_rooms_are_empty_and_past_their_timeout,
    records_misc::audit_log_pages_newest_first,
    records_misc::transcripts_update_interim_until_final,
    records_misc::transcripts_list_in_order,
    records_misc::revocations_move_forward_only,
    reconcile::reconcile_after_restart_applies_every_rule,
    nodes::nodes_register_heartbeat_and_list,
    leases::leases_grant_renew_refuse_expire_and_release,
    leases::renewal_reports_the_rooms_another_node_took,
    leases::releasing_a_dead_node_frees_its_leases,
    delivery_leases::delivery_leases_grant_renew_refuse_expire_and_release,
    delivery_leases::fenced_cursor_writes_need_the_current_lease,
    recovery::restart_reconciles_only_its_own_rows,
    recovery::releasing_a_dead_node_closes_its_rows_once,
    recovery::concurrent_releases_close_everything_once,
);
