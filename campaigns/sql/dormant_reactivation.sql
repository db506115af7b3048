-- Guests in the dormant state: at least one completed booking and none in the last dormant_days days
-- (as of the end of the as-of day). loyalflow enters each of them on the first run that finds them
-- (entry: state) and counts the steps from that day; a new booking takes the guest out of this list,
-- which ends their sequence. Value tiers (80:20) are ranked over every guest with a completed booking.
WITH completed AS (
  SELECT customer_id,
         order_id,
         ordered_at,
         product,
         ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY ordered_at DESC, order_id DESC) AS recency,
         SUM(total) OVER (PARTITION BY customer_id) AS lifetime_value,
         COUNT(*) OVER (PARTITION BY customer_id) AS orders_count
  FROM orders
  WHERE status = 'completed'
    AND ordered_at < :as_of_end   -- as of the end of the day: later bookings do not count yet
),
last_booking AS (
  SELECT customer_id,
         order_id,
         ordered_at,
         product,
         lifetime_value,
         orders_count,
         NTILE(5) OVER (ORDER BY lifetime_value DESC, customer_id) AS value_quintile
  FROM completed
  WHERE recency = 1
)
SELECT b.customer_id,
       b.order_id AS anchor_id,
       b.ordered_at AS anchor_at,
       b.ordered_at AS last_order_at,
       b.product AS last_order_product,
       b.lifetime_value,
       b.orders_count,
       CASE
         WHEN b.value_quintile = 1 THEN 'vip'
         WHEN b.value_quintile = 5 THEN 'bottom'
         ELSE 'core'
       END AS value_tier
FROM last_booking b
WHERE b.ordered_at < :dormant_since
