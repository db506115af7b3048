-- Completed bookings whose day-21 referral ask may be due, with the guest's value tier (80:20).
-- `qualifies` marks VIP guests (top 20% by lifetime completed spend); loyalflow adds guests who answered
-- positively and exits anyone who ever said "no thanks" (the `responses:` rules in referral_ask.yaml),
-- so this query reads only the warehouse. A booking returned within return_exit_days exits the ask.
WITH due AS MATERIALIZED (   -- computed once: SQLite would otherwise rescan orders per guest
  SELECT o.customer_id, o.order_id, o.ordered_at, o.product, o.total
  FROM orders o
  WHERE o.status = 'completed'
    AND o.ordered_at >= :window_start
    AND o.ordered_at < :anchor_end
),
spend AS (
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
recent_returns AS (
  SELECT DISTINCT customer_id
  FROM orders
  WHERE status = 'returned'
    AND ordered_at >= :return_exit_since
    AND ordered_at < :as_of_end
)
SELECT d.customer_id,
       d.order_id AS anchor_id,
       d.ordered_at AS anchor_at,
       d.product,
       d.total AS order_total,
       t.lifetime_value,
       t.orders_count,
       CASE
         WHEN t.value_quintile = 1 THEN 'vip'
         WHEN t.value_quintile = 5 THEN 'bottom'
         ELSE 'core'
       END AS value_tier,
       CASE WHEN t.value_quintile = 1 THEN 1 ELSE 0 END AS qualifies,
       CASE WHEN r.customer_id IS NOT NULL THEN 'returned a booking' END AS exit_reason
FROM due d
JOIN tiers t ON t.customer_id = d.customer_id
LEFT JOIN recent_returns r ON r.customer_id = d.customer_id
