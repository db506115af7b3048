-- Contacts with stage-bearing behaviour in the last activity_days days, with their latest such event.
-- The nurture program maps the event to a stage and picks the next unseen content item.
SELECT latest.customer_id,
       'pending' AS anchor_id,
       latest.occurred_at AS anchor_at,
       latest.event_type AS last_event_type,
       c.persona
FROM (
    SELECT e.customer_id,
           e.event_type,
           e.occurred_at,
           ROW_NUMBER() OVER (PARTITION BY e.customer_id ORDER BY e.occurred_at DESC, e.event_type) AS rn
    FROM events e
    WHERE e.event_type IN :stage_events
      AND e.occurred_at >= :activity_start
      AND e.occurred_at < :as_of_end
) latest
JOIN customers c ON c.customer_id = latest.customer_id
WHERE latest.rn = 1
