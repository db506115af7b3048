-- Completed bookings whose day-21 referral ask may be due, with the guest's value tier (80:20).
-- `qualifies` marks VIP guests (top 20% by lifetime completed spend); loyalflow adds guests who answered
-- positively and exits anyone who ever said "no thanks" (the `responses:` rules in referral_ask.yaml),
-- so this query reads only the warehouse. A booking returned within return_exit_days exits the ask.
-- The guest's figures reach their due bookings through one pass sorted by guest (window functions over
-- a UNION), not a join: it stays linear on warehouses without an index on orders (customer_id).
WITH spend AS (
  SELECT customer_id,
         SUM(total) AS lifetime_value,
         COUNT(*) AS orders_count
  FROM orders
  WHERE status = 'completed'
    AND ordered_at < :as_of_end   -- as of the end of the day: later bookings do not count yet
  GROUP BY customer_id
),
guests AS (
  SELECT customer_id,
         lifetime_value,
         orders_count,
         NTILE(5) OVER (ORDER BY lifetime_value DESC, customer_id) AS value_quintile
  FROM spend
),
stream AS (
  SELECT o.customer_id, o.order_id, o.ordered_at, o.product, o.total,
         NULL AS lifetime_value, NULL AS orders_count, NULL AS value_quintile, 0 AS returned, 1 AS due
  FROM orders o
  WHERE o.status = 'completed'
    AND o.ordered_at >= :window_start
    AND o.ordered_at < :anchor_end
  UNION ALL
  SELECT g.customer_id, NULL, NULL, NULL, NULL, g.lifetime_value, g.orders_count, g.value_quintile, 0, 0
  FROM guests g
  UNION ALL
  SELECT r.customer_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 1, 0
  FROM orders r
  WHERE r.status = 'returned'
    AND r.ordered_at >= :return_exit_since
    AND r.ordered_at < :as_of_end
),
joined AS (
  SELECT s.*,
         MAX(s.lifetime_value) OVER (PARTITION BY s.customer_id) AS guest_value,
         MAX(s.orders_count) OVER (PARTITION BY s.customer_id) AS guest_orders,
         MAX(s.value_quintile) OVER (PARTITION BY s.customer_id) AS guest_quintile,
         MAX(s.returned) OVER (PARTITION BY s.customer_id) AS guest_returned
  FROM stream s
)
SELECT j.customer_id,
       j.order_id AS anchor_id,
       j.ordered_at AS anchor_at,
       j.product,
       j.total AS order_total,
       j.guest_value AS lifetime_value,
       j.guest_orders AS orders_count,
       CASE
         WHEN j.guest_quintile = 1 THEN 'vip'
         WHEN j.guest_quintile = 5 THEN 'bottom'
         ELSE 'core'
       END AS value_tier,
       CASE WHEN j.guest_quintile = 1 THEN 1 ELSE 0 END AS qualifies,
       CASE WHEN j.guest_returned = 1 THEN 'returned a booking' END AS exit_reason
FROM joined j
WHERE j.due = 1
