-- Completed bookings on the as-of day (or within the catch-up window), one row per booking.
-- loyalflow bundles a guest's bookings of one day into one thank-you; the template lists them as items.
SELECT o.customer_id,
       'thanks' AS step,
       o.order_id AS anchor_id,
       o.ordered_at AS anchor_at,
       o.total AS order_total,
       o.product AS product,
       NULL AS friend_first_name
FROM orders o
WHERE o.status = 'completed'
  AND o.ordered_at >= :window_start
  AND o.ordered_at < :as_of_end
UNION ALL
-- Referrers whose referred friend completed a booking: friends who booked the same day share one message.
SELECT o.referred_by AS customer_id,
       'referrer_thanks' AS step,
       o.order_id AS anchor_id,
       o.ordered_at AS anchor_at,
       o.total AS order_total,
       o.product AS product,
       f.first_name AS friend_first_name
FROM orders o
JOIN customers f ON f.customer_id = o.customer_id
WHERE o.status = 'completed'
  AND o.referred_by IS NOT NULL
  AND o.ordered_at >= :window_start
  AND o.ordered_at < :as_of_end
