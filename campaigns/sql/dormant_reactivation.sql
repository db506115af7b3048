-- Guests whose last completed booking is at least 180 days old (anchor_offset_days), anchored on
-- that booking: the reminder is due 180 days after it, the other steps 7, 14 and 30 days later.
-- A new completed booking moves the anchor forward, so an active guest drops out on its own.
-- Value tiers (80:20) are ranked over every guest with a completed booking, not only dormant ones.
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
),
answers AS (
  -- the latest "no thanks" and the furthest "ask me later" date per guest, from any message
  SELECT customer_id,
         MAX(CASE WHEN answer = 'negative' THEN DATE(received_at) END) AS last_negative_on,
         MAX(CASE WHEN answer = 'later' THEN snooze_until END) AS snoozed_until
  FROM loyalflow_responses
  WHERE answer IN ('negative', 'later')
    AND received_at < :as_of_end
  GROUP BY customer_id
)
SELECT b.customer_id,
       b.order_id AS anchor_id,
       b.ordered_at AS anchor_at,
       b.product AS last_order_product,
       b.lifetime_value,
       b.orders_count,
       CASE
         WHEN b.value_quintile = 1 THEN 'vip'
         WHEN b.value_quintile = 5 THEN 'bottom'
         ELSE 'core'
       END AS value_tier,
       CASE
         WHEN a.last_negative_on >= DATE(b.ordered_at) THEN 'negative response'
         WHEN a.snoozed_until > :as_of THEN 'snoozed'
       END AS exit_reason
FROM last_booking b
LEFT JOIN answers a ON a.customer_id = b.customer_id
WHERE b.ordered_at >= :window_start
  AND b.ordered_at < :anchor_end
