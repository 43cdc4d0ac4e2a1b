-- SPEC §7 status: customers per walletStatus, each customer counted by its
-- latest status version; all four statuses appear, zeros included.
WITH latest AS (
    SELECT customer_id, arg_max(wallet_status, version) AS wallet_status
    FROM status
    GROUP BY customer_id
)
SELECT s.wallet_status AS walletStatus, count(l.customer_id) AS customers
FROM (VALUES (1, 'none'), (2, 'apple'), (3, 'google'), (4, 'both')) AS s(ord, wallet_status)
LEFT JOIN latest AS l ON l.wallet_status = s.wallet_status
GROUP BY s.ord, s.wallet_status
ORDER BY s.ord;
