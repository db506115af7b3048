-- Completed bookings whose day-21 referral ask may be due, for VIP guests (top 20% by lifetime
-- completed spend) and guests who answered positively to any message. A guest with a returned
-- booking or a negative answer comes back with an exit reason and is never asked.
WITH spend AS (
  SELECT customer_id,
         SUM(total) AS lifetime_value,
         COUNT(*) AS orders_count
  FROM orders
  WHERE status = 'completed'
    AND ordered_at < :as_of_end   -- as of the end of the day: later bookings do not count yet
  GROUP BY customer_id
),
tiers AS (
  SELECT customer_id,
         lifetime_value,
         orders_count,
         NTILE(5) OVER (ORDER BY lifetime_value DESC, customer_id) AS value_quintile
  FROM spend
),
answers AS (
  SELECT customer_id,
         MAX(CASE WHEN answer = 'positive' THEN 1 ELSE 0 END) AS has_positive,
         MAX(CASE WHEN answer = 'negative' THEN 1 ELSE 0 END) AS has_negative
  FROM loyalflow_responses
  WHERE received_at < :as_of_end
  GROUP BY customer_id
),
returners AS (
  SELECT DISTINCT customer_id
  FROM orders
  WHERE status = 'returned'
    AND ordered_at < :as_of_end
)
SELECT o.customer_id,
       o.order_id AS anchor_id,
       o.ordered_at AS anchor_at,
       o.product,
       o.total AS order_total,
       t.lifetime_value,
       t.orders_count,
       CASE
         WHEN t.value_quintile = 1 THEN 'vip'
         WHEN t.value_quintile = 5 THEN 'bottom'
         ELSE 'core'
       END AS value_tier,
       CASE
         WHEN r.customer_id IS NOT NULL THEN 'returned a booking'
         WHEN a.has_negative = 1 THEN 'negative response'
       END AS exit_reason
FROM orders o
JOIN tiers t ON t.customer_id = o.customer_id
LEFT JOIN answers a ON a.customer_id = o.customer_id
LEFT JOIN returners r ON r.customer_id = o.customer_id
WHERE o.status = 'completed'
  AND o.ordered_at >= :window_start
  AND o.ordered_at < :anchor_end
  AND (t.value_quintile = 1 OR a.has_positive = 1)
