//! EC2's word on whether a build machine still runs, asked while imgbake waits for it to come back
//! after a reboot: an instance stopped or terminated meanwhile ends the wait at once.

use imgbake_core::reboot::{MachineState, PlatformReboot};

use crate::support::*;

#[tokio::test]
async fn the_reboot_probe_reports_a_stopped_or_terminated_instance_as_gone() {
    let bed = Bed::start().await;
    let builder = bed.builder();
    let ec2 = bed.ec2(REGION).await;
    let session =
        imgbake_aws::Session { region: REGION.into(), profile: None, endpoint: Some(bed.proxy.endpoint()), role: None };
    let launch = || async {
        let run = ec2.run_instances().image_id(&bed.source).min_count(1).max_count(1).send().await.unwrap();
        run.instances()[0].instance_id().unwrap().to_string()
    };

    let stopped = launch().await;
    let probe = imgbake_aws::reboot::Ec2Reboot::new(builder.clients(&session).await, &stopped);
    assert_eq!(probe.machine_state().await, MachineState::Running);
    ec2.stop_instances().instance_ids(&stopped).send().await.unwrap();
    match probe.machine_state().await {
        MachineState::Gone(why) => assert!(why.contains(&stopped) && why.contains("stopp"), "{why}"),
        other => panic!("a stopped instance is gone for the wait, not {other:?}"),
    }

    let terminated = launch().await;
    let probe = imgbake_aws::reboot::Ec2Reboot::new(builder.clients(&session).await, &terminated);
    ec2.terminate_instances().instance_ids(&terminated).send().await.unwrap();
    match probe.machine_state().await {
        MachineState::Gone(why) => assert!(why.contains(&terminated), "{why}"),
        other => panic!("a terminated instance is gone for the wait, not {other:?}"),
    }

    let missing = imgbake_aws::reboot::Ec2Reboot::new(builder.clients(&session).await, "i-0000000000000dead");
    assert!(matches!(missing.machine_state().await, MachineState::Gone(_)), "an instance EC2 does not know is gone");
}
