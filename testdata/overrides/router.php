<?php
// The PHP built-in server's router for serve_override_test.go: reports
// the request method, what PHP parsed into $_POST['_method'] (which
// Symfony and Laravel read as the method of a POST), and the method such
// a framework would run the request as.
header('Content-Type: application/json');
$method = $_SERVER['REQUEST_METHOD'];
$field = $_POST['_method'] ?? null;
$effective = $method;
if ($method === 'POST' && is_string($field) && $field !== '') {
    $effective = strtoupper($field);
}
echo json_encode(['method' => $method, 'post_method' => $field, 'effective' => $effective]);
