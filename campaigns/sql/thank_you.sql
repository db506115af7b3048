-- Guests with a completed booking on the as-of day (or within the catch-up window):
-- one thank-you per guest and booking day.
SELECT o.customer_id,
       'thanks' AS step,
       CAST(DATE(o.ordered_at) AS VARCHAR(10)) AS anchor_id,
       MIN(o.ordered_at) AS anchor_at,
       COUNT(*) AS order_count,
       SUM(o.total) AS order_total,
       MIN(o.product) AS product,
       NULL AS friend_first_name
FROM orders o
WHERE o.status = 'completed'
  AND o.ordered_at >= :window_start
  AND o.ordered_at < :as_of_end
GROUP BY o.customer_id, DATE(o.ordered_at)
UNION ALL
-- Referrers whose referred friend completed a booking: one thank-you per referred booking.
SELECT o.referred_by AS customer_id,
       'referrer_thanks' AS step,
       o.order_id AS anchor_id,
       o.ordered_at AS anchor_at,
       1 AS order_count,
       o.total AS order_total,
       o.product AS product,
       f.first_name AS friend_first_name
FROM orders o
JOIN customers f ON f.customer_id = o.customer_id
WHERE o.status = 'completed'
  AND o.referred_by IS NOT NULL
  AND o.ordered_at >= :window_start
  AND o.ordered_at < :as_of_end
