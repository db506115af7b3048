-- Bookings whose day-3 reassurance or day-10 "get the most" message may be due.
-- The engine works out which step falls on the as-of day; this query only returns the candidate
-- bookings. A booking that has since been returned or cancelled comes back with an exit reason,
-- so the guest is recorded as having left the sequence instead of being messaged.
SELECT o.customer_id,
       o.order_id AS anchor_id,
       o.ordered_at AS anchor_at,
       o.product,
       o.total AS order_total,
       -- what kind of booking it is, so the day-10 tips fit (room stay, spa, family, meeting ...)
       CASE
         WHEN o.product LIKE '%Wedding%' OR o.product LIKE '%Bridal%' THEN 'wedding'
         WHEN o.product LIKE '%Gala%' THEN 'event'
         WHEN o.product LIKE '%Conference%' OR o.product LIKE '%Boardroom%'
           OR o.product LIKE '%Corporate%' THEN 'meeting'
         WHEN o.product LIKE '%Family%' THEN 'family'
         WHEN o.product LIKE '%Spa%' OR o.product LIKE '%Honeymoon%' THEN 'spa'
         ELSE 'stay'
       END AS booking_kind,
       CASE o.status
         WHEN 'returned' THEN 'order returned'
         WHEN 'cancelled' THEN 'order cancelled'
       END AS exit_reason
FROM orders o
WHERE o.status IN ('completed', 'returned', 'cancelled')
  AND o.ordered_at >= :window_start
  AND o.ordered_at < :anchor_end
