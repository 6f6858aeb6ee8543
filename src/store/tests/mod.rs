//! Store tests.
//!
//! `conformance` holds the behaviour every [`Store`](super::Store) must have; the macro below
//! runs each of its functions twice, as `store::tests::sqlite::<name>` on a fresh SQLite file
//! and as `store::tests::postgres::<name>` in a fresh schema of the real PostgreSQL server.
//! `backends` covers what is specific to one backend (URLs, files, schemas).

mod backends;
mod conformance;
mod harness;

/// Generates one test per backend for every listed conformance function.
macro_rules! conformance_suite {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::harness::run_sqlite(super::conformance::$test).await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::harness::run_postgres(super::conformance::$test).await;
                }
            )*
        }
    };
}

conformance_suite!(
    health_answers,
    room_started_inserts_an_active_room,
    room_started_is_idempotent,
    room_started_keeps_name_and_metadata_when_absent,
    room_status_transitions,
    room_finished_twice_keeps_the_first_close,
    room_finished_of_unknown_room_is_not_found,
    get_room_of_unknown_room_is_not_found,
    list_rooms_filters_by_status_and_orders_by_creation,
    participant_join_and_leave_round_trip,
    rejoin_with_same_identity_keeps_both_rows,
    list_participants_orders_by_joined_at,
    list_participants_of_unknown_or_empty_room,
    participant_left_of_unknown_sid_is_not_found,
    second_leave_keeps_the_first,
    join_to_unknown_room_is_not_found,
    join_retry_is_idempotent_and_sid_clash_is_a_conflict,
    joins_and_leaves_bump_room_last_active_at,
    timestamps_are_truncated_to_milliseconds,
    left_at_before_joined_at_is_clamped,
    counters_saturate_at_i64_max,
    concurrent_joins_and_leaves_are_all_recorded,
    get_participant_of_unknown_sid_is_not_found,
);
