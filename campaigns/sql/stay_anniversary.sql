-- Completed stays whose first anniversary may be due (the campaign is defined in Python:
-- dags/stay_anniversary.py). The engine works out which rows fall on the as-of day; a guest who has
-- booked again since is recorded as having left, not reminded of a stay they have just repeated.
SELECT o.customer_id,
       o.order_id AS anchor_id,
       o.ordered_at AS anchor_at,
       o.product,
       CASE WHEN EXISTS (
              SELECT 1 FROM orders later
              WHERE later.customer_id = o.customer_id
                AND later.ordered_at > o.ordered_at
                AND later.ordered_at < :anchor_end
                AND later.status = 'completed'
            ) THEN 'booked again since' END AS exit_reason
FROM orders o
WHERE o.status = 'completed'
  AND o.ordered_at >= :window_start
  AND o.ordered_at < :anchor_end
