/// The PostgreSQL store's schema as numbered migrations, applied in order under an advisory
/// lock by whichever process opens the database first; `sluice_schema_version` records the
/// version. Never edit a shipped migration: append a new one.
///
/// Times are seconds since the Unix epoch (double precision), as in the SQLite store, and
/// always come from the server's clock (`sluice_now()`), never from a worker's.
enum PostgresSchema {
    /// Key of the advisory lock that serializes migrations (any constant both sides agree on).
    static let migrationLock: Int64 = 0x51_1C_E0_01
    static let migrations: [String] = [
        // 1: everything the SQLite store has at its version 4.
        #"""
        CREATE FUNCTION sluice_now() RETURNS double precision LANGUAGE sql STABLE AS $$
            -- The server's clock. Tests of lease expiry set sluice.test_now to drive it.
            SELECT coalesce(nullif(current_setting('sluice.test_now', true), '')::double precision,
                            extract(epoch FROM now())::double precision)
        $$;

        CREATE TABLE jobs (
            id bigserial PRIMARY KEY,
            name text,
            state text NOT NULL CHECK (state IN ('loading', 'active', 'cancelled')),
            priority integer NOT NULL DEFAULT 0,
            input_path text NOT NULL,
            input_sha256 text NOT NULL,
            request_count bigint NOT NULL DEFAULT 0,
            bad_line_count bigint NOT NULL DEFAULT 0,
            created_at double precision NOT NULL,
            started_at double precision,
            finished_at double precision,
            creator_host text NOT NULL,
            creator_pid integer NOT NULL,
            loading_heartbeat double precision
        );
        CREATE UNIQUE INDEX jobs_name ON jobs(name) WHERE name IS NOT NULL;
        CREATE INDEX jobs_sha256 ON jobs(input_sha256);

        -- id = (job id << 32) | line number, as in the SQLite store. No foreign keys: COPY
        -- would check each row, and the store's own statements keep the tables consistent.
        CREATE TABLE requests (
            id bigint PRIMARY KEY,
            job_id bigint NOT NULL,
            line integer NOT NULL,
            state text NOT NULL CHECK (state IN ('queued', 'leased', 'done', 'failed', 'cancelled')),
            endpoint smallint,
            failed_attempts integer NOT NULL DEFAULT 0,
            not_before double precision NOT NULL DEFAULT 0,
            lease_owner text,
            lease_generation integer NOT NULL DEFAULT 0,
            lease_expires_at double precision,
            input_error text,
            custom_id text,
            checkpoint_tokens integer,
            checkpoint_payload bytea,
            body text,
            first_claimed_at double precision,
            claimed_at double precision,
            preemptions integer NOT NULL DEFAULT 0,
            interrupted integer NOT NULL DEFAULT 0,
            lost_leases integer NOT NULL DEFAULT 0,
            claimed_checkpoint_tokens integer NOT NULL DEFAULT -1
        );
        CREATE UNIQUE INDEX requests_custom_id ON requests(job_id, custom_id) WHERE input_error IS NULL;
        CREATE INDEX requests_job_state ON requests(job_id, state);
        CREATE INDEX requests_queued ON requests(job_id, id) WHERE state = 'queued';
        CREATE INDEX requests_leased ON requests(lease_expires_at) WHERE state = 'leased';
        CREATE INDEX requests_lease_owner ON requests(lease_owner) WHERE state = 'leased';

        CREATE TABLE results (
            request_id bigint PRIMARY KEY,
            job_id bigint NOT NULL,
            status_code integer,
            error_code text,
            error_message text,
            prompt_tokens bigint NOT NULL DEFAULT 0,
            completion_tokens bigint NOT NULL DEFAULT 0,
            finished_at double precision NOT NULL,
            worker_id text,
            lease_generation integer NOT NULL DEFAULT 0,
            body text,
            from_cache integer NOT NULL DEFAULT 0
        );
        CREATE INDEX results_job ON results(job_id);

        CREATE TABLE workers (
            id text PRIMARY KEY,
            host text NOT NULL,
            pid integer NOT NULL,
            description text NOT NULL,
            started_at double precision NOT NULL,
            heartbeat_at double precision NOT NULL,
            stopped_at double precision
        );

        CREATE TABLE result_cache (
            key text PRIMARY KEY,
            status_code integer NOT NULL,
            body text NOT NULL,
            prompt_tokens bigint NOT NULL,
            completion_tokens bigint NOT NULL,
            created_at double precision NOT NULL,
            hits bigint NOT NULL DEFAULT 0
        );

        -- error.message of a server's JSON error body; NULL when the body is not JSON.
        CREATE FUNCTION sluice_error_message(body text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
        BEGIN
            RETURN body::jsonb -> 'error' ->> 'message';
        EXCEPTION WHEN others THEN
            RETURN NULL;
        END
        $$;

        -- Records the finish time of a job once nothing in it is queued or leased.
        CREATE FUNCTION sluice_mark_finished(p_job bigint, t double precision) RETURNS void LANGUAGE sql AS $$
            UPDATE jobs SET finished_at = t
            WHERE id = p_job AND finished_at IS NULL AND state <> 'loading'
              AND NOT EXISTS (SELECT 1 FROM requests WHERE job_id = p_job AND state IN ('queued', 'leased'))
        $$;

        -- A claim in one round trip: fails worn-out leases (worker_lost), then leases expired
        -- leases and queued requests, job by job in priority order, skipping rows other
        -- workers are claiming at the same moment.
        CREATE FUNCTION sluice_claim(p_worker text, p_job bigint, p_limit integer, p_lease double precision,
                                     p_max_lost integer)
        RETURNS TABLE (id bigint, job_id bigint, line integer, custom_id text, endpoint smallint, body text,
                       lease_generation integer, failed_attempts integer, checkpoint_tokens integer,
                       checkpoint_payload bytea)
        LANGUAGE plpgsql AS $$
        #variable_conflict use_column
        DECLARE
            t double precision := sluice_now();
            remaining integer := p_limit;
            got integer;
            lost_job bigint;
            lost_jobs bigint[];
            j record;
        BEGIN
            WITH worn AS (
                UPDATE requests AS r
                SET state = 'failed', lease_owner = NULL, lease_expires_at = NULL, lost_leases = r.lost_leases + 1,
                    checkpoint_tokens = NULL, checkpoint_payload = NULL
                WHERE r.id IN (
                    SELECT w.id FROM requests AS w JOIN jobs AS wj ON wj.id = w.job_id
                    WHERE w.state = 'leased' AND w.lease_expires_at <= t AND wj.state = 'active'
                      AND w.lost_leases + 1 >= greatest(p_max_lost, 1)
                      AND coalesce(w.checkpoint_tokens, -1) <= w.claimed_checkpoint_tokens
                    FOR UPDATE OF w SKIP LOCKED)
                RETURNING r.id, r.job_id, r.lost_leases),
            inserted AS (
                INSERT INTO results (request_id, job_id, error_code, error_message, finished_at)
                SELECT worn.id, worn.job_id, 'worker_lost',
                       format('the request''s lease expired %s times without progress (its worker was lost each time); gave up after --max-lost-leases %s',
                              worn.lost_leases, worn.lost_leases), t
                FROM worn
                ON CONFLICT (request_id) DO UPDATE
                    SET error_code = excluded.error_code, error_message = excluded.error_message,
                        finished_at = excluded.finished_at, status_code = NULL, body = NULL
                RETURNING results.job_id)
            SELECT array_agg(DISTINCT inserted.job_id) INTO lost_jobs FROM inserted;
            FOREACH lost_job IN ARRAY coalesce(lost_jobs, '{}') LOOP
                PERFORM sluice_mark_finished(lost_job, t);
            END LOOP;

            FOR j IN SELECT jobs.id FROM jobs WHERE jobs.state = 'active' AND (p_job IS NULL OR jobs.id = p_job)
                     ORDER BY jobs.priority DESC, jobs.id LOOP
                EXIT WHEN remaining <= 0;
                RETURN QUERY
                WITH expired AS (
                    SELECT r.id FROM requests AS r
                    WHERE r.job_id = j.id AND r.state = 'leased' AND r.lease_expires_at <= t
                    ORDER BY r.id LIMIT remaining FOR UPDATE SKIP LOCKED),
                queued AS (
                    SELECT r.id FROM requests AS r
                    WHERE r.job_id = j.id AND r.state = 'queued' AND r.not_before <= t
                    ORDER BY r.id LIMIT remaining FOR UPDATE SKIP LOCKED),
                chosen AS (
                    SELECT picked.id FROM (SELECT expired.id FROM expired UNION ALL SELECT queued.id FROM queued) AS picked
                    ORDER BY picked.id LIMIT remaining)
                UPDATE requests AS r
                SET state = 'leased', lease_owner = p_worker, lease_expires_at = t + p_lease,
                    lease_generation = r.lease_generation + 1,
                    first_claimed_at = coalesce(r.first_claimed_at, t), claimed_at = t,
                    preemptions = r.preemptions
                        + (CASE WHEN r.state = 'leased' OR r.interrupted <> 0 OR r.checkpoint_tokens IS NOT NULL THEN 1 ELSE 0 END),
                    interrupted = 0,
                    lost_leases = r.lost_leases
                        + (CASE WHEN r.state = 'leased' AND coalesce(r.checkpoint_tokens, -1) <= r.claimed_checkpoint_tokens
                           THEN 1 ELSE 0 END),
                    claimed_checkpoint_tokens = coalesce(r.checkpoint_tokens, -1)
                FROM chosen WHERE r.id = chosen.id
                RETURNING r.id, r.job_id, r.line, r.custom_id, r.endpoint, r.body, r.lease_generation,
                          r.failed_attempts, r.checkpoint_tokens, r.checkpoint_payload;
                GET DIAGNOSTICS got = ROW_COUNT;
                IF got > 0 THEN
                    remaining := remaining - got;
                    UPDATE jobs SET started_at = t WHERE jobs.id = j.id AND jobs.started_at IS NULL;
                END IF;
            END LOOP;
        END
        $$;

        -- A commit batch in one round trip: results, checkpoints, releases and result-cache
        -- writes, each only where the named lease is still the worker's. Returns the lost leases.
        CREATE FUNCTION sluice_commit(p_worker text, p_batch jsonb)
        RETURNS TABLE (lost_id bigint, lost_generation integer)
        LANGUAGE plpgsql AS $$
        #variable_conflict use_column
        DECLARE
            t double precision := sluice_now();
            touched bigint;
            lost_ids bigint[] := '{}';
            lost_gens integer[] := '{}';
            more_ids bigint[];
            more_gens integer[];
        BEGIN

            WITH input AS (
                SELECT * FROM jsonb_to_recordset(coalesce(p_batch->'results', '[]'))
                    AS x(id bigint, gen integer, status integer, code text, message text, prompt bigint,
                         completion bigint, body text)),
            finished AS (
                UPDATE requests AS r
                SET state = CASE WHEN i.status IS NOT NULL THEN 'done' ELSE 'failed' END,
                    lease_owner = NULL, lease_expires_at = NULL, checkpoint_tokens = NULL, checkpoint_payload = NULL
                FROM input AS i
                WHERE r.id = i.id AND r.state = 'leased' AND r.lease_owner = p_worker AND r.lease_generation = i.gen
                RETURNING r.id, r.job_id),
            stored AS (
                INSERT INTO results (request_id, job_id, status_code, error_code, error_message, prompt_tokens,
                                     completion_tokens, finished_at, worker_id, lease_generation, body)
                SELECT i.id, f.job_id, i.status, i.code, i.message, coalesce(i.prompt, 0), coalesce(i.completion, 0),
                       t, p_worker, i.gen, i.body
                FROM input AS i JOIN finished AS f ON f.id = i.id
                ON CONFLICT (request_id) DO UPDATE
                    SET status_code = excluded.status_code, error_code = excluded.error_code,
                        error_message = excluded.error_message, prompt_tokens = excluded.prompt_tokens,
                        completion_tokens = excluded.completion_tokens, finished_at = excluded.finished_at,
                        worker_id = excluded.worker_id, lease_generation = excluded.lease_generation,
                        body = excluded.body, from_cache = 0
                RETURNING request_id)
            SELECT array_agg(i.id), array_agg(i.gen) INTO more_ids, more_gens
            FROM input AS i WHERE NOT EXISTS (SELECT 1 FROM finished AS f WHERE f.id = i.id);
            lost_ids := lost_ids || coalesce(more_ids, '{}');
            lost_gens := lost_gens || coalesce(more_gens, '{}');

            WITH input AS (
                SELECT * FROM jsonb_to_recordset(coalesce(p_batch->'checkpoints', '[]'))
                    AS x(id bigint, gen integer, tokens integer, payload text)),
            saved AS (
                UPDATE requests AS r SET checkpoint_tokens = i.tokens, checkpoint_payload = decode(i.payload, 'hex')
                FROM input AS i
                WHERE r.id = i.id AND r.state = 'leased' AND r.lease_owner = p_worker AND r.lease_generation = i.gen
                RETURNING r.id)
            SELECT array_agg(i.id), array_agg(i.gen) INTO more_ids, more_gens
            FROM input AS i WHERE NOT EXISTS (SELECT 1 FROM saved AS s WHERE s.id = i.id);
            lost_ids := lost_ids || coalesce(more_ids, '{}');
            lost_gens := lost_gens || coalesce(more_gens, '{}');

            WITH input AS (
                SELECT * FROM jsonb_to_recordset(coalesce(p_batch->'releases', '[]'))
                    AS x(id bigint, gen integer, failure boolean, delay double precision, tokens integer, payload text)),
            released AS (
                UPDATE requests AS r
                SET state = 'queued', lease_owner = NULL, lease_expires_at = NULL,
                    failed_attempts = r.failed_attempts + (CASE WHEN i.failure THEN 1 ELSE 0 END),
                    not_before = CASE WHEN i.delay IS NULL THEN 0 ELSE t + i.delay END,
                    interrupted = CASE WHEN i.failure THEN 0 ELSE 1 END,
                    checkpoint_tokens = CASE WHEN i.tokens IS NOT NULL THEN i.tokens ELSE r.checkpoint_tokens END,
                    checkpoint_payload = CASE WHEN i.tokens IS NOT NULL THEN decode(i.payload, 'hex') ELSE r.checkpoint_payload END
                FROM input AS i
                WHERE r.id = i.id AND r.state = 'leased' AND r.lease_owner = p_worker AND r.lease_generation = i.gen
                RETURNING r.id)
            SELECT array_agg(i.id), array_agg(i.gen) INTO more_ids, more_gens
            FROM input AS i WHERE NOT EXISTS (SELECT 1 FROM released AS s WHERE s.id = i.id);
            lost_ids := lost_ids || coalesce(more_ids, '{}');
            lost_gens := lost_gens || coalesce(more_gens, '{}');

            INSERT INTO result_cache (key, status_code, body, prompt_tokens, completion_tokens, created_at)
            SELECT x.key, x.status, x.body, x.prompt, x.completion, t
            FROM jsonb_to_recordset(coalesce(p_batch->'cache_stores', '[]'))
                AS x(key text, status integer, body text, prompt bigint, completion bigint)
            ON CONFLICT (key) DO NOTHING;

            WITH hits AS (
                SELECT x.id, x.gen, x.key FROM jsonb_to_recordset(coalesce(p_batch->'cache_hits', '[]'))
                    AS x(id bigint, gen integer, key text)
                WHERE x.id <> ALL (lost_ids)),
            marked AS (
                UPDATE results AS res SET from_cache = 1 FROM hits
                WHERE res.request_id = hits.id AND res.lease_generation = hits.gen RETURNING res.request_id)
            UPDATE result_cache AS c SET hits = c.hits + n.count
            FROM (SELECT hits.key, count(*) AS count FROM hits GROUP BY hits.key) AS n WHERE c.key = n.key;

            FOR touched IN
                SELECT DISTINCT (x.id >> 32) FROM jsonb_to_recordset(coalesce(p_batch->'results', '[]')) AS x(id bigint)
                ORDER BY 1
            LOOP
                PERFORM sluice_mark_finished(touched, t);
            END LOOP;

            RETURN QUERY SELECT * FROM unnest(lost_ids, lost_gens);
        END
        $$;
        """#,
        // 2: no unique index on (job_id, custom_id). Nothing looks a request up by custom_id, and
        // uniqueness within a job is settled where its lines are read (enqueue keeps the first
        // line of a duplicate and fails the others as `duplicate_custom_id`; `db copy` copies a
        // job that was checked so). Keeping the index up cost a third of the server's time in a
        // `COPY` of requests: 3.8 s against 2.8 s for 300,000 lines.
        #"""
        DROP INDEX IF EXISTS requests_custom_id;
        """#,
    ]

    static var currentVersion: Int { migrations.count }
}
