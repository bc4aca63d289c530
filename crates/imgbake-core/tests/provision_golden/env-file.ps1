$env:APP_MODE = 'prod'
$env:QUOTED = 'it''s "here" $notvar `n'
